"""Convert dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat``) to ONNX.

The ``.dat`` file is dlib's own serialisation of the network declared in dlib's
``dnn_face_recognition_ex.cpp`` (``anet_type``)::

    loss_metric<fc_no_bias<128, avg_pool_everything<
        alevel0<alevel1<alevel2<alevel3<alevel4<
        max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>>

with ``ares<N>`` = ``relu<add_prev1<block<N,affine,1,tag1<...>>>>`` and ``ares_down<N>`` =
``relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<...>>>>>>>``.

dlib writes a network outside-in: every layer's version number first (2 for a computing layer,
1 for a tag or skip layer, 2 or 3 for the layer on the input), then the input layer, then each
computing layer's parameters from the input outwards. Tags and skips leave no parameters, so
the bytes alone cannot say where they are: :func:`architecture` lays the declared network out
and :func:`read_dlib_resnet` checks the file against it (each version number, each layer's
type string, each kernel shape) while it decodes the weights. Nothing is copied by hand: the
convolution kernels, the affine (frozen batch-norm) scales and shifts, the fully connected
matrix and the input layer's per-channel means all come out of the file.

:func:`build_onnx` writes the same computation as an ONNX graph: input ``chip``
``[N,3,150,150]`` float RGB 0-255 (the chip dlib's ``get_face_chip`` cuts), dlib's input
normalisation ``(x - mean_c) / 256`` inside the graph, output ``descriptor`` ``[N,128]``
(not normalised: dlib compares descriptors by Euclidean distance, < 0.6 = same person).
Each affine layer is folded into the convolution before it (in float64). dlib's ``add_prev``
adds tensors of different shapes by padding the smaller one with zeros at the end of each
axis; the graph does the same with ``Pad``.

Only :func:`build_onnx` needs the ``onnx`` package; decoding needs only numpy.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import SetupError


class DlibFormatError(SetupError):
    """The file is not the dlib ResNet face descriptor this converter knows."""


# ------------------------------------------------------------------------- the network


@dataclass(frozen=True)
class Layer:
    """One layer of the declared network: ``kind`` and its template arguments."""

    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, tag, skip, fc, input
    args: tuple = ()


def _block(n: int, stride: int) -> list[Layer]:
    # BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>>, outside-in
    return [
        Layer("affine"),
        Layer("con", (n, 3, 3, 1, 1)),
        Layer("relu"),
        Layer("affine"),
        Layer("con", (n, 3, 3, stride, stride)),
    ]


def _ares(n: int) -> list[Layer]:
    return [Layer("relu"), Layer("add_prev", (1,)), *_block(n, 1), Layer("tag", (1,))]


def _ares_down(n: int) -> list[Layer]:
    return [
        Layer("relu"),
        Layer("add_prev", (2,)),
        Layer("avg_pool", (2, 2, 2, 2)),
        Layer("skip", (1,)),
        Layer("tag", (2,)),
        *_block(n, 2),
        Layer("tag", (1,)),
    ]


def architecture() -> list[Layer]:
    """dlib's ``anet_type`` (dnn_face_recognition_ex.cpp), outside-in, loss layer excluded."""
    layers = [Layer("fc", (128,)), Layer("avg_pool", (0, 0, 1, 1))]
    layers += _ares_down(256)  # alevel0
    layers += _ares(256) + _ares(256) + _ares_down(256)  # alevel1
    layers += _ares(128) + _ares(128) + _ares_down(128)  # alevel2
    layers += _ares(64) + _ares(64) + _ares(64) + _ares_down(64)  # alevel3
    layers += _ares(32) + _ares(32) + _ares(32)  # alevel4
    layers += [
        Layer("max_pool", (3, 3, 2, 2)),
        Layer("relu"),
        Layer("affine"),
        Layer("con", (32, 7, 7, 2, 2)),
        Layer("input", (150, 150)),
    ]
    return layers


# ------------------------------------------------------------------ dlib serialisation


class _Reader:
    """dlib's ``serialize.h`` primitives over a byte string."""

    def __init__(self, data: bytes) -> None:
        self.buf = io.BytesIO(data)
        self.size = len(data)

    def _take(self, n: int) -> bytes:
        b = self.buf.read(n)
        if len(b) != n:
            raise DlibFormatError(f"file ends early at byte {self.buf.tell()} (wanted {n} more)")
        return b

    def int(self) -> int:
        """dlib's integers: one control byte (size in the low 4 bits, 0x80 = negative), then
        that many little-endian bytes."""
        ctrl = self._take(1)[0]
        n = ctrl & 0x0F
        if n == 0 or n > 8 or ctrl & 0x70:
            raise DlibFormatError(f"bad integer control byte {ctrl:#x} at {self.buf.tell() - 1}")
        v = int.from_bytes(self._take(n), "little")
        return -v if ctrl & 0x80 else v

    def float(self) -> float:
        """dlib's ``float_details``: an int64 mantissa and an int16 exponent."""
        mantissa, exponent = self.int(), self.int()
        return float(np.ldexp(float(mantissa), exponent))

    def bool(self) -> bool:
        ch = self._take(1)
        if ch not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool byte {ch!r} at {self.buf.tell() - 1}")
        return ch == b"1"

    def string(self) -> str:
        n = self.int()
        if not 0 <= n < 256:
            raise DlibFormatError(f"implausible string length {n} at {self.buf.tell()}")
        return self._take(n).decode("ascii", errors="replace")

    def tensor(self) -> np.ndarray:
        """A ``resizable_tensor``: version 2, four dims, then raw little-endian float32."""
        if (v := self.int()) != 2:
            raise DlibFormatError(f"tensor version {v}, expected 2")
        dims = tuple(self.int() for _ in range(4))
        count = int(np.prod(dims))
        if count < 0 or count * 4 > self.size:
            raise DlibFormatError(f"implausible tensor shape {dims}")
        return np.frombuffer(self._take(4 * count), "<f4").reshape(dims).copy()

    def alias(self) -> tuple[int, int, int, int]:
        """An ``alias_tensor``: version 1 and four dims (a view into a layer's params)."""
        if (v := self.int()) != 1:
            raise DlibFormatError(f"alias_tensor version {v}, expected 1")
        return tuple(self.int() for _ in range(4))

    def expect(self, *names: str) -> str:
        s = self.string()
        if s not in names:
            raise DlibFormatError(f"found layer {s!r} where the network has {' or '.join(names)}")
        return s


@dataclass
class DlibLayer:
    """A decoded layer: the declared :class:`Layer` and the arrays read for it."""

    layer: Layer
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, object] = field(default_factory=dict)


@dataclass
class DlibNet:
    """The decoded network, input-first (``layers[0]`` is the input layer)."""

    layers: list[DlibLayer]
    input_mean: np.ndarray  # (3,) RGB means subtracted before the /256 scaling
    input_size: tuple[int, int]
    loss: dict[str, float]
    sha256: str


def _read_con(r: _Reader, layer: Layer, in_channels: int) -> dict:
    r.expect("con_4", "con_5", "con_6")
    params = r.tensor().ravel()
    num_filters = r.int()
    nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
    fshape = r.alias()
    bshape = r.alias()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.float()
    n, knr, knc, ksy, ksx = layer.args
    if (num_filters, nr, nc, sy, sx) != (n, knr, knc, ksy, ksx):
        raise DlibFormatError(f"con layer {(num_filters, nr, nc, sy, sx)}, declared {layer.args}")
    if fshape != (n, in_channels, nr, nc) or bshape[:2] != (1, n):
        raise DlibFormatError(f"con filter shape {fshape}, expected {(n, in_channels, nr, nc)}")
    nf = int(np.prod(fshape))
    if params.size != nf + n:
        raise DlibFormatError(f"con params hold {params.size} values, expected {nf + n}")
    return {
        "weights": {"W": params[:nf].reshape(fshape), "b": params[nf:]},
        "meta": {"stride": (sy, sx), "pad": (py, px), "kernel": (nr, nc)},
    }


def _read_affine(r: _Reader, channels: int) -> dict:
    version = r.expect("affine_", "affine_2", "bn_con2")
    if version == "bn_con2":  # a batch-norm layer stored from training: fold its statistics
        params = r.tensor().ravel()
        r.alias(), r.alias()
        r.tensor(), r.tensor()  # batch means / invstds of the last training step
        running_means = r.tensor().ravel().astype(np.float64)
        running_vars = r.tensor().ravel().astype(np.float64)
        r.int(), r.int()  # num_updates, running_stats_window_size
        for _ in range(4):
            r.float()
        eps = r.float()
        gamma = params[:channels] / np.sqrt(running_vars + eps)
        beta = params[channels:] - gamma * running_means
    else:
        params = r.tensor().ravel()
        g_shape, _ = r.alias(), r.alias()
        mode = r.int()
        if version == "affine_2":
            r.bool()  # disabled
        if mode != 0:  # CONV_MODE
            raise DlibFormatError(f"affine layer in mode {mode}, expected 0 (per channel)")
        if g_shape[1] != channels or params.size != 2 * channels:
            raise DlibFormatError(f"affine layer has {g_shape[1]} channels, expected {channels}")
        gamma, beta = params[:channels], params[channels:]
    return {"weights": {"gamma": np.asarray(gamma, np.float64), "beta": np.asarray(beta)}}


def _read_pool(r: _Reader, layer: Layer, name: str) -> dict:
    r.expect(f"{name}_2")
    nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
    if (nr, nc, sy, sx) != layer.args or (py, px) != (0, 0):
        raise DlibFormatError(f"{name} {(nr, nc, sy, sx, py, px)}, declared {layer.args}, pad 0")
    return {"meta": {"kernel": (nr, nc), "stride": (sy, sx)}}


def _read_fc(r: _Reader, layer: Layer, in_features: int) -> dict:
    r.expect("fc_2", "fc_3")
    num_outputs, num_inputs = r.int(), r.int()
    params = r.tensor().ravel()
    w_shape, _ = r.alias(), r.alias()
    bias_mode = r.int()
    for _ in range(4):
        r.float()
    if num_outputs != layer.args[0] or num_inputs != in_features or bias_mode != 1:
        raise DlibFormatError(
            f"fc {num_inputs}->{num_outputs} bias mode {bias_mode}, "
            f"expected {in_features}->{layer.args[0]} without bias (mode 1)"
        )
    if w_shape[:2] != (num_inputs, num_outputs):
        raise DlibFormatError(f"fc weight shape {w_shape}")
    return {"weights": {"W": params[: num_inputs * num_outputs].reshape(num_inputs, num_outputs)}}


def _layer_fields(r: _Reader, version: int, on_input: bool) -> None:
    """The training state every ``add_layer`` stores after its details (not needed here)."""
    for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, output disabled
        r.bool()
    r.tensor(), r.tensor()  # x_grad, cached_output
    r.tensor()  # params_grad (or grad_final for the layer on the input)
    if on_input and version >= 3:
        r.int()  # sample expansion factor


def read_dlib_resnet(path: str | os.PathLike) -> DlibNet:
    """Decode ``dlib_face_recognition_resnet_model_v1.dat`` against :func:`architecture`.

    Raises :class:`DlibFormatError` naming the first place where the bytes and the declared
    network disagree (another network, a truncated or corrupt file)."""
    data = Path(path).read_bytes()
    r = _Reader(data)
    if (v := r.int()) != 1:
        raise DlibFormatError(f"loss layer version {v}, expected 1")
    loss = {}
    if r.expect("loss_metric_", "loss_metric_2") == "loss_metric_2":
        loss = {"margin": r.float(), "dist_thresh": r.float()}
    arch = architecture()
    versions = []
    for layer in arch[:-1]:
        v = r.int()
        expected = (1,) if layer.kind in ("tag", "skip") else (2, 3) if layer is arch[-2] else (2,)
        if v not in expected:
            raise DlibFormatError(f"{layer.kind} layer has version {v}, expected {expected}")
        versions.append(v)
    r.expect("input_rgb_image_sized")
    mean = np.array([r.float(), r.float(), r.float()])
    size = (r.int(), r.int())
    if size != arch[-1].args:
        raise DlibFormatError(f"input size {size}, declared {arch[-1].args}")
    decoded = [DlibLayer(arch[-1])]
    shape = (3, *size)  # (channels, rows, cols) flowing up the network
    tags: dict[int, tuple[int, int, int]] = {}
    for idx in range(len(arch) - 2, -1, -1):  # input outwards
        layer, version = arch[idx], versions[idx]
        got: dict = {}
        if layer.kind == "tag":
            tags[layer.args[0]] = shape
        elif layer.kind == "skip":
            shape = tags[layer.args[0]]
        elif layer.kind == "con":
            got = _read_con(r, layer, shape[0])
            (sy, sx), (py, px), (kr, kc) = got["meta"]["stride"], got["meta"]["pad"], (
                got["meta"]["kernel"]
            )
            shape = (
                layer.args[0],
                1 + (shape[1] + 2 * py - kr) // sy,
                1 + (shape[2] + 2 * px - kc) // sx,
            )
        elif layer.kind == "affine":
            got = _read_affine(r, shape[0])
        elif layer.kind == "relu":
            if r.expect("relu_", "relu_2") == "relu_2":
                r.bool()
        elif layer.kind in ("max_pool", "avg_pool"):
            got = _read_pool(r, layer, layer.kind)
            (kr, kc), (sy, sx) = got["meta"]["kernel"], got["meta"]["stride"]
            if kr == 0:  # avg_pool_everything
                shape = (shape[0], 1, 1)
            else:
                shape = (shape[0], 1 + (shape[1] - kr) // sy, 1 + (shape[2] - kc) // sx)
        elif layer.kind == "add_prev":
            r.expect("add_prev_")
            other = tags[layer.args[0]]
            got = {"meta": {"a": shape, "b": other}}
            shape = tuple(max(a, b) for a, b in zip(shape, other, strict=True))
        elif layer.kind == "fc":
            got = _read_fc(r, layer, int(np.prod(shape)))
            shape = (layer.args[0], 1, 1)
        if layer.kind not in ("tag", "skip"):
            _layer_fields(r, version, on_input=idx == len(arch) - 2)
        got.setdefault("meta", {})["out_shape"] = shape
        decoded.append(DlibLayer(layer, got.get("weights", {}), got["meta"]))
    if r.buf.tell() != len(data):
        raise DlibFormatError(f"{len(data) - r.buf.tell()} bytes left after the network")
    return DlibNet(decoded, mean, size, loss, hashlib.sha256(data).hexdigest())


# ----------------------------------------------------------------------------- to ONNX


def build_onnx(net: DlibNet, *, opset: int = 17):
    """The ONNX ``ModelProto`` computing the same descriptor as dlib on a 150x150 chip."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    counter = [0]

    def name(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(prefix: str, arr: np.ndarray, dtype=np.float32) -> str:
        n = name(prefix)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype), n))
        return n

    def node(op: str, inputs: list[str], **attrs) -> str:
        out = name(op.lower())
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    rows, cols = net.input_size
    x = node("Sub", ["chip", const("mean", net.input_mean.reshape(1, 3, 1, 1))])
    x = node("Mul", [x, const("scale", np.array(1.0 / 256.0))])
    tags: dict[int, str] = {}
    layers = net.layers[1:]
    i = 0
    while i < len(layers):
        dl = layers[i]
        k = dl.layer.kind
        if k == "con":
            w = dl.weights["W"].astype(np.float64)
            b = dl.weights["b"].astype(np.float64)
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if nxt is not None and nxt.layer.kind == "affine":  # fold the affine layer
                g, beta = nxt.weights["gamma"], nxt.weights["beta"].astype(np.float64)
                w = w * g[:, None, None, None]
                b = b * g + beta
                i += 1
            py, px = dl.meta["pad"]
            x = node(
                "Conv",
                [x, const("W", w), const("B", b)],
                kernel_shape=list(dl.meta["kernel"]),
                strides=list(dl.meta["stride"]),
                pads=[py, px, py, px],
            )
        elif k == "affine":
            g = dl.weights["gamma"].reshape(1, -1, 1, 1)
            x = node("Mul", [x, const("gamma", g)])
            x = node("Add", [x, const("beta", dl.weights["beta"].reshape(1, -1, 1, 1))])
        elif k == "relu":
            x = node("Relu", [x])
        elif k == "max_pool":
            x = node(
                "MaxPool",
                [x],
                kernel_shape=list(dl.meta["kernel"]),
                strides=list(dl.meta["stride"]),
            )
        elif k == "avg_pool":
            if dl.meta["kernel"][0] == 0:
                x = node("GlobalAveragePool", [x])
            else:
                x = node(
                    "AveragePool",
                    [x],
                    kernel_shape=list(dl.meta["kernel"]),
                    strides=list(dl.meta["stride"]),
                )
        elif k == "tag":
            tags[dl.layer.args[0]] = x
        elif k == "skip":
            x = tags[dl.layer.args[0]]
        elif k == "add_prev":
            out = dl.meta["out_shape"]
            a = _pad_to(x, dl.meta["a"], out, node, const)
            b = _pad_to(tags[dl.layer.args[0]], dl.meta["b"], out, node, const)
            x = node("Add", [a, b])
        elif k == "fc":
            x = node("Flatten", [x], axis=1)
            x = node("MatMul", [x, const("fc", dl.weights["W"])])
        i += 1
    nodes[-1].output[0] = "descriptor"
    graph = helper.make_graph(
        nodes,
        "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info("chip", TensorProto.FLOAT, ["N", 3, rows, cols])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["N", 128])],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="liveness.dlib_convert",
        doc_string=(
            "dlib_face_recognition_resnet_model_v1 (Davis King, CC0 1.0) converted from "
            f"dlib's .dat (SHA-256 {net.sha256}). Input: RGB 0-255 float [N,3,150,150], "
            "dlib's get_face_chip geometry. Output: 128-d descriptor, Euclidean < 0.6 = same."
        ),
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _pad_to(x: str, shape: tuple, out: tuple, node, const) -> str:
    """Zero-pad ``x`` of ``(C,H,W)`` ``shape`` at the end of each axis up to ``out``
    (dlib's ``tt::add`` treats values outside the smaller tensor as zero)."""
    if tuple(shape) == tuple(out):
        return x
    extra = [o - s for o, s in zip(out, shape, strict=True)]
    pads = np.array([0, 0, 0, 0, 0, extra[0], extra[1], extra[2]], np.int64)
    return node("Pad", [x, const("pads", pads, np.int64)], mode="constant")


def convert(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Decode ``src`` (dlib's .dat) and write the ONNX model to ``dest`` (mode 0644, written
    to a temporary name first so a reader never sees half a file). Returns ``dest``."""
    model = build_onnx(read_dlib_resnet(src))
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.write_bytes(model.SerializeToString())
    os.replace(tmp, dest)
    return dest

