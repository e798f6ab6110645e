import os

# The inductor cache folder named by the server's own environment, read before torch can set the variable itself
# (it does, to its /tmp default, the first time torch._dynamo is imported): pipelines/void/accel.compile_cache_dir.
INDUCTOR_CACHE_DIR_AT_START = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
