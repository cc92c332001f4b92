"""Serve the iris model with nvidia-pytriton (Triton 2.51, Python backend), default dynamic
batching. Runs in the pytriton virtual environment.

Usage: python pytriton_iris.py MODEL.joblib HTTP_PORT GRPC_PORT METRICS_PORT WORKSPACE
"""

import sys

import joblib
import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

model = joblib.load(sys.argv[1])
http_port, grpc_port, metrics_port = (int(x) for x in sys.argv[2:5])


@batch
def infer(input):  # the parameter is named after the input tensor
    labels = model.predict(input).astype(np.int64).reshape(-1, 1)
    return {"label": labels, "probabilities": model.predict_proba(input).astype(np.float64)}


config = TritonConfig(
    http_address="127.0.0.1",
    grpc_address="127.0.0.1",
    http_port=http_port,
    grpc_port=grpc_port,
    metrics_port=metrics_port,
)
# An explicit workspace: the default one, under ~/.cache/pytriton, outlives a killed server.
with Triton(config=config, workspace=sys.argv[5]) as triton:
    triton.bind(
        model_name="iris",
        infer_func=infer,
        inputs=[Tensor(name="input", dtype=np.float32, shape=(4,))],
        outputs=[
            Tensor(name="label", dtype=np.int64, shape=(1,)),
            Tensor(name="probabilities", dtype=np.float64, shape=(3,)),
        ],
        config=ModelConfig(max_batch_size=64),
    )
    print("pytriton: serving", flush=True)
    triton.serve()
