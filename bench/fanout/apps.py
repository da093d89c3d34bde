from django.apps import AppConfig


class FanoutConfig(AppConfig):
    name = "bench.fanout"
    label = "bench_fanout"
