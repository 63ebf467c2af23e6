"""The edges of copyspan: the command line, Ray actors and the Kafka service."""
