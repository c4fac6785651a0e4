from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.health import healthz, readyz
from governance.apis.provenance import ProvenanceVerifyApi

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/governance/", include("governance.urls")),
    path("api/provenance/verify", ProvenanceVerifyApi.as_view(), name="provenance-verify"),
    path("api/reenactment/", include("reenactment.urls")),
]
