from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView

from demo.views import calculator

urlpatterns = [
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
    path("admin/", admin.site.urls),
    path("calculator/", calculator, name="calculator"),
    path("rpc/", include("rpcapp.urls")),
]
