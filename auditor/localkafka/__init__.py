"""Run a real single-node Apache Kafka (KRaft) broker locally, from jars fetched by Maven."""
