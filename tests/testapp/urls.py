from django.urls import path

from . import views

urlpatterns = [
    path("total/", views.total),
    path("counting/", views.counting),
]
