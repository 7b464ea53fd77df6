"""How many Triton kernels does a compiled loss launch on a GPU? Counted without a GPU.

    python benchmarks/triton_kernels.py [--write] [--show] [--json FILE] [names ...]

``trainer__compile_loss=True`` runs a loss's forward and backward through
TorchInductor (:mod:`skd.losses.compiled`). On the CPU Inductor writes C++
kernels, which fuse more than Triton does (benchmarks/ops.py counts them: a
lower bound). This script makes Inductor write the **CUDA** code of each
loss, for an H100 (sm_90, 132 SMs), on a machine without a GPU, and counts
the kernel launches in the generated ``call()`` of the forward and of the
backward: the number of kernels the compiled loss launches on that GPU.

Method (codegen only: nothing is compiled to PTX, tuned or run on a GPU):

1. Dynamo, AOTAutograd and Inductor's front half (decompositions, joint
   graph passes, the forward/backward partition) run on CPU tensors, through
   ``compile_fx(gm, inputs, inner_compile=retarget_inner)``: autograd on fake
   CUDA tensors needs a driver.
2. ``retarget_inner`` gets each partitioned graph, rewrites every CPU device
   in it to ``cuda:0``, makes fake CUDA inputs of the same shapes, strides
   and dtypes, and calls Inductor's ``compile_fx_inner`` with ``torch.cuda``,
   Inductor's CUDA interface and Triton's driver made to look like an H100.
3. A hook on ``GraphLowering.codegen`` keeps the generated wrapper and stops
   there; the CPU graph runs eagerly so that ``backward()`` compiles the
   backward.
4. Launches are counted in ``call()``: Triton kernels (each equal to
   Inductor's ``generated_kernel_count``) and library (ATen) fallbacks, each
   one kernel or more.

How far to trust it: a no-grad cross-check where Dynamo sees CUDA devices
gives the same counts for plain KL and the sanity cases (a pointwise chain
and a row softmax: one kernel each). Splitting a large reduction depends on
the SM count (an H100 PCIe has 114). Decompositions that depend on the
device ran on the CPU; the script flags any that fire (none did for these
losses). Every input is on the GPU, as a fit's epoch state is. A GPU run
reading ``torch._inductor.metrics.generated_kernel_count`` would confirm
the counts; none has been made yet.

The table compares each loss's launches (forward, backward, and the
backward's seed ``ones_like``, which the eager count includes) with plain
KL's 17 eager kernels (benchmarks/ops.py; target <= 1.5x), at B=256,
C=100. It patches ``torch.cuda`` for the whole process: run it on its own,
never import it into a process that trains.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import copy
import inspect
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import namedtuple
from pathlib import Path

# Inductor's cache goes to a directory of its own, removed at exit: this process's "compiled" graphs
# are not runnable, and must not be found by another process
_CACHE = tempfile.mkdtemp(prefix="skd_triton_kernels_")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

import torch  # noqa: E402
import torch._inductor.config as inductor_config  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch._inductor import compile_fx as cfx  # noqa: E402
from torch._inductor import metrics  # noqa: E402
from torch._inductor.graph import GraphLowering  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from skd.losses.compiled import INDUCTOR_OPTIONS  # noqa: E402

from _report import add_write_flag, update_section  # noqa: E402

# ----------------------------------------------------------------------------------------------
# pretend an H100 (sm_90), 132 SMs
Props = namedtuple(
    "Props",
    "name major minor total_memory multi_processor_count regs_per_multiprocessor "
    "max_threads_per_multi_processor max_threads_per_block warp_size gcnArchName L2_cache_size "
    "shared_memory_per_block_optin shared_memory_per_multiprocessor shared_memory_per_block "
    "clock_rate memory_clock_rate memory_bus_width uuid is_integrated",
)
H100 = Props("NVIDIA H100 80GB HBM3", 9, 0, 80 << 30, 132, 65536, 2048, 1024, 32, "", 50 << 20,
             232448, 233472, 49152, 1980000, 2619000, 5120, "fake", False)


def _install_fake_cuda():
    """Make torch.cuda look like one H100 (process-wide; Dynamo/AOT still trace on CPU tensors)."""
    import torch.cuda.graphs as cg
    import torch.cuda.random as cr
    def zeros(*args, **kwargs):
        return torch.zeros(16, dtype=torch.uint8)

    fakes = {
        "is_available": lambda: True,
        "device_count": lambda: 1,
        "current_device": lambda: 0,
        "get_device_properties": lambda d=None: H100,
        "get_device_capability": lambda d=None: (9, 0),
        "get_device_name": lambda d=None: H100.name,
        "_lazy_init": lambda: None,
        "is_initialized": lambda: True,
        "is_current_stream_capturing": lambda: False,
        "get_rng_state": zeros,
        "set_rng_state": lambda *a, **k: None,
        "is_bf16_supported": lambda *a, **k: True,
        "synchronize": lambda *a, **k: None,
        "_exchange_device": lambda d: 0,
        "_maybe_exchange_device": lambda d: 0,
        "set_device": lambda d: None,
    }
    for k, v in fakes.items():
        setattr(torch.cuda, k, v)
    cg.is_current_stream_capturing = fakes["is_current_stream_capturing"]
    cr.get_rng_state, cr.set_rng_state = fakes["get_rng_state"], fakes["set_rng_state"]
    # Dynamo's stream tracking asks the (absent) driver for the current stream
    torch.accelerator.is_available = lambda: False
    from torch._dynamo.device_interface import CudaInterface
    for k in ("current_device", "set_device", "device_count", "synchronize", "get_device_properties",
              "is_bf16_supported"):
        setattr(CudaInterface, k, staticmethod(fakes[k]))
    CudaInterface.exchange_device = staticmethod(fakes["_exchange_device"])
    CudaInterface.maybe_exchange_device = staticmethod(fakes["_maybe_exchange_device"])
    CudaInterface.get_raw_stream = staticmethod(lambda d: 0)
    # a Triton driver that reports an sm_90 target without touching libcuda
    from triton.backends.compiler import GPUTarget
    from triton.runtime.driver import driver as triton_driver

    class FakeCudaDriver:
        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

        def get_active_torch_device(self):
            return torch.device("cuda", 0)

        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def is_active(self):
            return True

        def __getattr__(self, name):
            raise AttributeError(f"FakeCudaDriver.{name} (no GPU here)")

    triton_driver.set_active(FakeCudaDriver())
    # Tensor.copy_ (and __getitem__) go through a C++ CUDA device guard before dispatch, which
    # asks the driver; the aten op itself is fine on fake tensors.  Used by Inductor's reinplace pass.
    from torch._subclasses.fake_tensor import FakeTensor
    FakeTensor.copy_ = lambda self, src, non_blocking=False: torch.ops.aten.copy_.default(  # noqa: E731
        self, src, non_blocking)
    import torch.utils._triton as ut
    for f in (ut.has_triton, ut.has_triton_package):
        if hasattr(f, "cache_clear"):
            f.cache_clear()


_install_fake_cuda()


# ----------------------------------------------------------------------------------------------
class _CodegenDone(Exception):
    pass


CAPTURED = []  # list of (kind, wrapper source)
_CURRENT_KIND = [None]

_orig_codegen = GraphLowering.codegen


def _codegen_hook(self):
    out = _orig_codegen(self)
    code = out[0]
    src = getattr(code, "value", code)
    CAPTURED.append((_CURRENT_KIND[0], src, metrics.generated_kernel_count))
    raise _CodegenDone()


GraphLowering.codegen = _codegen_hook

CUDA = torch.device("cuda", 0)


def _retarget(x):
    if isinstance(x, torch.device) and x.type == "cpu":
        return CUDA
    if isinstance(x, str) and x == "cpu":
        return CUDA
    if isinstance(x, (list, tuple)):
        return type(x)(_retarget(y) for y in x)
    if isinstance(x, dict):
        return {k: _retarget(v) for k, v in x.items()}
    return x


def retarget_graph(gm):
    gm = copy.deepcopy(gm)
    for node in gm.graph.nodes:
        node.args = _retarget(node.args)
        node.kwargs = _retarget(node.kwargs)
        node.meta.pop("val", None) if node.op != "placeholder" else None
        node.meta.pop("tensor_meta", None)
    for name, _ in list(gm.named_buffers()) + list(gm.named_parameters()):
        raise RuntimeError(f"graph holds a constant tensor {name}; not handled")
    for node in gm.graph.nodes:
        if node.op == "get_attr" and isinstance(getattr(gm, node.target, None), torch.Tensor):
            raise RuntimeError(f"graph holds a constant tensor {node.target}; not handled")
    gm.recompile()
    return gm


def retarget_inner(gm, example_inputs, **kwargs):
    kind = "backward" if kwargs.get("is_backward") else "forward"
    fake_mode = torch._guards.detect_fake_mode(example_inputs)
    gm2 = retarget_graph(gm)
    ctx = fake_mode if fake_mode is not None else contextlib.nullcontext()
    with ctx:
        new_inputs = []
        for x in example_inputs:
            if isinstance(x, torch.Tensor):
                new_inputs.append(torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=CUDA))
            else:
                new_inputs.append(x)
    for node, x in zip(gm2.graph.find_nodes(op="placeholder"), new_inputs, strict=True):
        node.meta["val"] = x
    _CURRENT_KIND[0] = kind
    metrics.reset()
    try:
        cfx.compile_fx_inner(gm2, new_inputs, **kwargs)
    except _CodegenDone:
        pass
    except Exception as e:  # BackendCompilerFailed wraps it sometimes
        if "_CodegenDone" not in repr(e) and not isinstance(e.__cause__, _CodegenDone):
            raise
    # hand back something runnable on the CPU inputs: the graph itself, boxed
    from torch._functorch.aot_autograd import make_boxed_func
    return make_boxed_func(gm.forward)


# Decompositions run during AOT tracing, i.e. on the CPU tensors.  A few of them branch on the
# device (mm/bmm/addmm with size-1 dims, batch norm, pads, ...).  Record every such decomposition
# that actually runs on a CPU tensor, so a result that may differ from a real GPU run is flagged.
_DEVICE_WORDS = (".device.type", "is_cuda", "is_cpu", "is_gpu(", '"cpu"', '"cuda"', "'cpu'", "'cuda'")
DEVICE_SENSITIVE_HITS = []


# checks hidden in helpers (not visible in the decomposition's own source)
_DEVICE_SENSITIVE_NAMES = ("batch_norm", "_pad", "pad.", "tensor_split", "upsample", "_addmm_activation")
# source mentions a device but the result is the same when every tensor is on one device
_BENIGN = ("aten.masked_fill", "aten._softmax_backward_data")


def _device_sensitive(op, fn):
    name = str(op)
    if name.startswith(_BENIGN):
        return False
    if any(k in name for k in _DEVICE_SENSITIVE_NAMES):
        return True
    try:
        src = inspect.getsource(inspect.unwrap(fn))
    except (OSError, TypeError):
        return False
    src = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith("#"))
    return any(w in src for w in _DEVICE_WORDS)


def _recording_decomp_table():
    from torch._inductor.decomposition import select_decomp_table
    table = dict(select_decomp_table())
    for op, fn in list(table.items()):
        if _device_sensitive(op, fn):
            def wrapped(*args, __fn=fn, __op=op, **kwargs):
                leaves = torch.utils._pytree.tree_leaves((args, kwargs))
                if str(__op).startswith("aten._to_copy") and (
                        kwargs.get("device") is None or torch.device(kwargs["device"]) == args[0].device):
                    return __fn(*args, **kwargs)  # only a device change makes it device-dependent
                if any(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in leaves):
                    out = __fn(*args, **kwargs)
                    declined = "" if out is not NotImplemented else " (declined)"
                    DEVICE_SENSITIVE_HITS.append(f"{__op}{declined}")
                    return out
                return __fn(*args, **kwargs)
            table[op] = wrapped
    return table


def inductor_cuda_backend(gm, example_inputs):
    return cfx.compile_fx(gm, example_inputs, inner_compile=retarget_inner,
                          decompositions=_recording_decomp_table())


# ----------------------------------------------------------------------------------------------
def analyse(src):
    """Count launches in the wrapper's call() (comment lines dropped)."""
    m = re.search(r"def call\(.*?(?=\n\S)", src, re.S)
    if m is None:
        raise RuntimeError("no call() in the generated wrapper")
    body = "\n".join(line for line in m.group(0).splitlines() if not line.lstrip().startswith("#"))
    launches = re.findall(r"\b(\w+)\.run\(", body)
    defined = set(re.findall(r"^(\w+) = async_compile\.triton\(", src, re.M))
    triton_launches = [k for k in launches if k in defined]
    other_runs = [k for k in launches if k not in defined]
    extern = re.findall(r"\b(extern_kernels\.\w+|aten\.\w+(?:\.\w+)?|torch\.ops\.\w+\.\w+(?:\.\w+)?)\(", body)
    extern += [f".{k}()" for k in re.findall(r"\.(copy_|zero_|fill_)\(", body)]
    extern += [f"{k}.run (not a Triton def!)" for k in other_runs]
    return {"triton": len(triton_launches), "distinct": len(defined), "names": triton_launches,
            "extern": extern}


def measure(fn, inputs, show=False, label=""):
    CAPTURED.clear()
    DEVICE_SENSITIVE_HITS.clear()
    torch._dynamo.reset()
    cf = torch.compile(fn, backend=inductor_cuda_backend, fullgraph=True, dynamic=False)
    out = cf(*inputs)
    if out.requires_grad:
        out.backward()
    res = {}
    for kind, src, nk in CAPTURED:
        a = analyse(src)
        a["metric"] = nk
        res.setdefault(kind, []).append(a)
        if show:
            print(f"===== {label} {kind} =====\n{src}")
    res["device_sensitive_decomps"] = sorted(set(DEVICE_SENSITIVE_HITS))
    return res


# ----------------------------------------------------------------------------------------------
BATCH, N_CLASSES, TEMPERATURE = 256, 100, 4.0
#: Plain KL's eager forward + backward at (256, C), counted by benchmarks/ops.py (reference_ops("kl")).
EAGER_KL = 17
LOSSES = ["kd", "tfkd", "dkd", "cakd", "dist", "r2kd"]


def plain_kl(student, teacher):
    return TEMPERATURE**2 * F.kl_div(F.log_softmax(student / TEMPERATURE, 1),
                                     F.log_softmax(teacher / TEMPERATURE, 1),
                                     log_target=True, reduction="batchmean")


def cases(names):
    """``(label, fn, inputs)`` per name: ``"sanity"`` (known answers), ``"kl"``, or a loss of skd."""
    generator = torch.Generator().manual_seed(0)

    def student():
        return torch.randn(BATCH, N_CLASSES, generator=generator).requires_grad_(True)

    def teacher():
        return torch.randn(BATCH, N_CLASSES, generator=generator) * 3

    labels = torch.randint(0, N_CLASSES, (BATCH,), generator=generator)
    if "sanity" in names:
        yield "sanity: x.sin().cos() (no grad)", lambda x: x.sin().cos(), [teacher()]
        yield "sanity: softmax(x, 1) (no grad)", lambda x: torch.softmax(x, 1), [teacher()]
    if "kl" in names:
        yield "plain KL", plain_kl, [student(), teacher()]
    from skd.losses import make_loss

    for name in names:
        if name in ("sanity", "kl"):
            continue
        loss = make_loss(name, {})
        state = loss.epoch_state(10**9, device="cpu", labelled_only=True)

        def fn(s, t, y, loss=loss, state=state):
            terms = loss(s, t if loss.capabilities.teacher else None, y, state)
            total = None
            for value in terms.values():
                total = value if total is None else total + value
            return total

        yield name, fn, [student(), teacher(), labels]


def launches(result) -> int:
    """Kernels of one forward + backward: Triton, fallbacks, and the backward's seed if there is one."""
    parts = result.get("forward", []) + result.get("backward", [])
    return sum(a["triton"] + len(a["extern"]) for a in parts) + (1 if result.get("backward") else 0)


def main(argv=None):
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("torch._inductor.utils").setLevel(logging.ERROR)  # "cache dir kept": our abort
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=["sanity", "kl", *LOSSES])
    parser.add_argument("--show", action="store_true", help="print the generated wrapper code")
    parser.add_argument("--json", type=Path, help="also write {name: kernels} to this file (tests read it)")
    add_write_flag(parser)
    args = parser.parse_args(argv)
    inductor_config.compile_threads = 1
    inductor_config.force_disable_caches = True
    for key, value in INDUCTOR_OPTIONS.items():  # as skd's compiled call sets them
        setattr(inductor_config, key, value)
    start = time.time()
    lines = [f"Triton kernels of the compiled loss (`trainer__compile_loss=True`) on an H100, forward + "
             f"backward at B={BATCH}, C={N_CLASSES}: Inductor's CUDA code written without a GPU "
             f"(`python benchmarks/triton_kernels.py`; torch {torch.__version__}).", "",
             "| function | forward | backward | fallbacks | kernels (with the backward's seed) "
             f"| vs eager plain KL ({EAGER_KL}; target <= 1.5) |", "|---|---|---|---|---|---|"]
    counted = {}
    for label, fn, inputs in cases(args.names):
        result = measure(fn, inputs, show=args.show, label=label)
        forward, backward = result.get("forward", []), result.get("backward", [])
        extern = [e for a in forward + backward for e in a["extern"]]
        total = counted[label] = launches(result)
        device_dependent = result["device_sensitive_decomps"]
        flag = (" (device-dependent decompositions ran on the CPU: " + ", ".join(device_dependent) + ")"
                if device_dependent else "")
        counts = ["+".join(str(a["triton"]) for a in part) or "-" for part in (forward, backward)]
        lines.append(f"| {label}{flag} | {counts[0]} | {counts[1]} | {', '.join(extern) or 'none'} | "
                     f"{total} | {total / EAGER_KL:.2f} |")
    table = "\n".join(lines)
    print(table)
    print(f"({time.time() - start:.0f} s)")
    print(f"saved to {update_section('triton', table, write=args.write)}")
    if args.json:
        args.json.write_text(json.dumps(counted))


if __name__ == "__main__":
    main()
