"""Dataset builders, the demo, and accuracy/throughput benchmarks for copyspan."""
