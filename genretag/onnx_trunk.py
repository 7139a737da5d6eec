"""ONNX Runtime as the CPU engine of a network's trunk: ``--precision onnx``.

The trunk as ``tag`` runs it in fp32 (BatchNorm folded, pooling before the activation:
:func:`genretag.inference.for_inference`) is exported to ONNX in memory and run by ONNX
Runtime's CPU provider; the log-mel front-end and the head stay in torch, so the windows, the
pooled features and every score still go through the one inference path. The arithmetic is
fp32 as trained, in other kernels: scores agree with torch fp32 to about 1e-6.

On an AVX2-only EPYC (``benchmarks/onnx_int8.py``, one thread, torch as ``tag`` runs it) musicnn's
MSD network ran 1.36x faster than in torch and ``tag --ckpt musicnn-msd`` 1.10-1.14x, so
``--precision auto`` takes this engine for that network; the default CRNN's forward only 1.06x,
which the export at start-up takes back, so the CRNN stays in torch.

It needs the ``genretag[onnx]`` extra (onnxruntime, and onnx for the exporter). The export takes
a second or two per model at start-up and nothing is written to disk. Each process builds its
own session on first use (DataLoader workers included: a session does not survive a fork), with
as many threads as torch has there.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import warnings

import torch
from torch import Tensor, nn


def available() -> bool:
    """Whether ONNX Runtime and the exporter's ``onnx`` package are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def export(trunk: nn.Module, example: Tensor) -> bytes:
    """``trunk`` (log-mel (B, mels, frames) -> pooled features (B, D)) as an ONNX model, the batch
    dimension free. Raises what the exporter raises for a trunk it cannot trace."""
    buffer = io.BytesIO()
    # TorchScript's exporter: 1-2 s for the default CRNN, where torch.export's took 20 s and
    # needs onnxscript. Its notices (deprecation, GRU batch sizes, traced conditions) are for
    # model authors; the session is checked against the trunk below.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            trunk, (example,), buffer, input_names=["spec"], output_names=["features"],
            dynamic_axes={"spec": {0: "batch"}, "features": {0: "batch"}}, dynamo=False,
        )  # fmt: skip
    return buffer.getvalue()


class OnnxTrunk(nn.Module):
    """Runs an exported trunk in ONNX Runtime: log-mel (B, mels, frames) -> features (B, D).

    Built from the torch trunk and one log-mel batch ``example``; the export is checked against
    the trunk on it (ValueError when they differ by more than ``tolerance``). A batch whose
    shape after the batch dimension differs from the example's runs in the torch trunk, kept for
    that.
    """

    def __init__(self, trunk: nn.Module, example: Tensor, tolerance: float = 1e-4) -> None:
        super().__init__()
        self.torch_trunk = trunk
        self.out_features = trunk.out_features
        self.shape = tuple(example.shape[1:])
        with torch.no_grad():
            self.model = export(trunk, example.float().contiguous())
            expected = trunk(example)
        self._sessions: dict[int, object] = {}
        got = self(example)
        self._sessions.clear()  # built again where it runs: DataLoader workers have their own
        if not torch.allclose(got, expected, rtol=0, atol=tolerance):
            difference = float((got - expected).abs().max())
            raise ValueError(f"ONNX Runtime differs from torch by {difference:.2g}")

    def session(self):
        """This process's ONNX Runtime session, built on first use with torch's thread count."""
        pid = os.getpid()
        if pid not in self._sessions:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.inter_op_num_threads = 1
            # Threads that spin between batches would take the core from a decoding worker.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.log_severity_level = 3
            self._sessions[pid] = onnxruntime.InferenceSession(
                self.model, options, providers=["CPUExecutionProvider"]
            )
        return self._sessions[pid]

    def forward(self, spec: Tensor) -> Tensor:
        if tuple(spec.shape[1:]) != self.shape or spec.device.type != "cpu":
            return self.torch_trunk(spec)
        out = self.session().run(None, {"spec": spec.float().contiguous().numpy()})[0]
        return torch.from_numpy(out)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_sessions"] = {}  # a session cannot be pickled (DataLoader workers by spawn)
        return state
