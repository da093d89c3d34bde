from django.apps import AppConfig


class SoakConfig(AppConfig):
    name = "bench.soak_app"
    label = "bench_soak"
    verbose_name = "Soak benchmark procedures"
