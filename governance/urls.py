from django.urls import path

from governance.apis import UserMeApi

app_name = "governance"

urlpatterns = [
    path("me/", UserMeApi.as_view(), name="user-me"),
]
