"""What the search adds to L_val: the latency term LAT(alpha) (latency), the FLOPs term (flops) and the
error models of the predictor the search believes (errors)."""
