from django.urls import path

from reenactment import apis

app_name = "reenactment"

urlpatterns = [
    path("jobs/", apis.RenderJobListApi.as_view(), name="job-list"),
    path("jobs/create/", apis.RenderJobCreateApi.as_view(), name="job-create"),
    path("jobs/<int:job_id>/", apis.RenderJobDetailApi.as_view(), name="job-detail"),
    path("jobs/<int:job_id>/cancel/", apis.RenderJobCancelApi.as_view(), name="job-cancel"),
    path("jobs/<int:job_id>/withdraw/", apis.RenderJobWithdrawApi.as_view(), name="job-withdraw"),
    path(
        "jobs/<int:job_id>/download-link/",
        apis.RenderJobDownloadLinkApi.as_view(),
        name="job-download-link",
    ),
    path("downloads/<str:token>", apis.RenderJobDownloadApi.as_view(), name="job-download"),
    path("workers/", apis.WorkerListApi.as_view(), name="worker-list"),
    path("webhooks/", apis.WebhookEndpointListApi.as_view(), name="webhook-list"),
    path("webhooks/create/", apis.WebhookEndpointCreateApi.as_view(), name="webhook-create"),
    path(
        "webhooks/<int:endpoint_id>/deliveries/",
        apis.WebhookDeliveryListApi.as_view(),
        name="webhook-deliveries",
    ),
]
