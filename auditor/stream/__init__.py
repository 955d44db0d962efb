"""The Kafka shell: the consume-audit-produce loop, chain restoration, dead letters, HTTP.

Only this package imports ``confluent_kafka``. The per-batch work itself (decode, evaluate,
build and seal records, route outputs) is :class:`auditor.stream.processor.BatchProcessor`,
which sees messages through a small Protocol and is unit-tested without a broker.
"""
