"""Tests of ModuleMetric and the pyiqa adapter (a fake ``pyiqa`` package stands in for the real one;
``test_pyiqa_real.py`` runs the real one)."""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
from torch import nn

from iqaguard.errors import InputError, MissingWeightsError, ScoreError, UnknownNameError
from iqaguard.metrics import adapters
from iqaguard.metrics.adapters import MissingDependencyError, ModuleMetric, PyiqaMetric
from iqaguard.metrics.base import Bounds
from iqaguard.registry import METRICS


class Reshaped(nn.Module):
    """Mean brightness times a learnable weight, returned in a chosen shape."""

    def __init__(self, shape_fn) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(2.0))
        self.shape_fn = shape_fn

    def forward(self, x, ref=None):
        s = self.w * x.mean(dim=(1, 2, 3))
        if ref is not None:
            s = s - self.w * ref.mean(dim=(1, 2, 3))
        return self.shape_fn(s)


X = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "shape_fn", [lambda s: s, lambda s: s[:, None], lambda s: s.view(-1, 1, 1, 1)], ids=["B", "B1", "B111"]
)
def test_module_outputs_are_reduced_to_b(shape_fn):
    m = ModuleMetric(Reshaped(shape_fn), bounds=Bounds(0.0, 2.0))
    out = m(X)
    assert out.shape == (3,)
    torch.testing.assert_close(out, 2 * X.mean(dim=(1, 2, 3)))


def test_scalar_output_for_one_image():
    m = ModuleMetric(Reshaped(lambda s: s.sum()), bounds=(0.0, 2.0))
    assert m(X[:1]).shape == (1,)
    with pytest.raises(ScoreError, match=r"B = 3"):
        m(X)


def test_bad_output_shapes_raise_clear_errors():
    with pytest.raises(ScoreError, match=r"got shape \[3, 2\]"):
        ModuleMetric(Reshaped(lambda s: torch.stack([s, s], 1)), bounds=(0, 1))(X)
    with pytest.raises(ScoreError, match="tuple"):
        ModuleMetric(Reshaped(lambda s: (s, s)), bounds=(0, 1))(X)


def test_gradients_flow_to_the_image():
    m = ModuleMetric(Reshaped(lambda s: s[:, None]), bounds=(0, 2))
    x = X.clone().requires_grad_(True)
    m(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 2.0 / (3 * 8 * 8)))


def test_full_reference_module_gets_the_pair():
    m = ModuleMetric(Reshaped(lambda s: s), kind="fr", lower_better=True, bounds=(1.0, 0.0), name="diff")
    ref = X.flip(0)
    torch.testing.assert_close(m(X, ref), 2 * (X.mean(dim=(1, 2, 3)) - ref.mean(dim=(1, 2, 3))))
    assert m.kind == "fr" and m.lower_better and m.name == "diff"
    with pytest.raises(InputError, match="reference"):
        m(X)


def test_missing_bounds_and_bad_arguments():
    with pytest.raises(InputError, match="calibrate"):
        ModuleMetric(Reshaped(lambda s: s))
    with pytest.raises(InputError, match="kind"):
        ModuleMetric(Reshaped(lambda s: s), kind="rr", bounds=(0, 1))
    with pytest.raises(InputError, match="module"):
        ModuleMetric(lambda x: x.mean(), bounds=(0, 1))
    with pytest.raises(InputError, match="bounds"):
        ModuleMetric(Reshaped(lambda s: s), bounds=(0, 1, 2))


def test_calibrated_constructor_measures_the_bounds():
    imgs = torch.cat([torch.zeros(1, 3, 16, 16), torch.ones(1, 3, 16, 16)])
    m = ModuleMetric.calibrated(Reshaped(lambda s: s), imgs)
    assert m.bounds == Bounds(worst=0.0, best=2.0)  # JPEG keeps black and white exactly


# ------------------------------------------------------------------ fake pyiqa

WEIGHT_URL = "https://example.invalid/weights/FakeNet_koniq-1234abcd.pth"
BACKBONE_URL = "https://example.invalid/hub/backbone-99.pth"


def _install_fake_pyiqa(monkeypatch, cache: Path) -> types.SimpleNamespace:
    """A minimal stand-in with the structure the adapter relies on (configs, registry, downloads)."""
    rec = types.SimpleNamespace(create_kwargs=[], downloads=[], cache_at_create=[])

    pkg = types.ModuleType("pyiqa")
    pkg.__path__ = []
    utils = types.ModuleType("pyiqa.utils")
    utils.__path__ = []
    dl = types.ModuleType("pyiqa.utils.download_util")
    dl.DEFAULT_CACHE_DIR = str(cache)

    def download_url_to_file(url, dst, hash_prefix=None, progress=True):
        rec.downloads.append((url, dst))
        Path(dst).write_bytes(b"weights")

    def load_file_from_url(url, model_dir=None):
        folder = model_dir or dl.DEFAULT_CACHE_DIR
        os.makedirs(folder, exist_ok=True)
        dst = os.path.join(folder, os.path.basename(urlparse(url).path))
        if not os.path.exists(dst):
            dl.download_url_to_file(url, dst)  # looked up at call time, as pyiqa does
        return dst

    dl.download_url_to_file = download_url_to_file
    dl.load_file_from_url = load_file_from_url

    archs = types.ModuleType("pyiqa.archs")
    archs.__path__ = []
    arch_mod = types.ModuleType("pyiqa.archs.fake_arch")
    arch_mod.default_model_urls = {"koniq": WEIGHT_URL, "ava": "https://example.invalid/weights/FakeNet_ava-1.pth"}

    class FakeNet(nn.Module):
        def __init__(self, pretrained="koniq", hidden_backbone=False):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(3.0))
            if pretrained:
                load_file_from_url(arch_mod.default_model_urls[pretrained])
            if hidden_backbone:
                load_file_from_url(BACKBONE_URL)

        def forward(self, x, ref=None):
            s = self.w * x.mean(dim=(1, 2, 3))
            return (s if ref is None else s - self.w * ref.mean(dim=(1, 2, 3)))[:, None]

    class Weightless(nn.Module):
        def forward(self, x, ref):
            return (x - ref).abs().mean(dim=(1, 2, 3))[:, None]

    FakeNet.__module__ = arch_mod.__name__
    arch_mod.FakeNet = FakeNet
    registry = types.ModuleType("pyiqa.utils.registry")
    registry.ARCH_REGISTRY = types.SimpleNamespace(get=lambda t: {"FakeNet": FakeNet, "Weightless": Weightless}[t])

    configs = types.ModuleType("pyiqa.default_model_configs")
    configs.DEFAULT_CONFIGS = {
        "fakenet": {"metric_opts": {"type": "FakeNet", "pretrained": "koniq"}, "metric_mode": "NR",
                    "score_range": "~0, ~3"},
        "fakehidden": {"metric_opts": {"type": "FakeNet", "pretrained": None, "hidden_backbone": True},
                       "metric_mode": "NR", "score_range": "0, 3"},
        "fakefr": {"metric_opts": {"type": "Weightless"}, "metric_mode": "FR", "lower_better": True,
                   "score_range": "0, ~1"},
        "fakeunbounded": {"metric_opts": {"type": "Weightless"}, "metric_mode": "FR", "score_range": "0, ~"},
    }

    class InferenceModel(nn.Module):
        def __init__(self, name, as_loss=False, loss_reduction="mean", device=None, **kw):
            super().__init__()
            cfg = configs.DEFAULT_CONFIGS[name]
            opts = dict(cfg["metric_opts"])
            opts.update(kw)
            kind = opts.pop("type")
            self.net = registry.ARCH_REGISTRY.get(kind)(**opts)
            self.metric_mode = cfg["metric_mode"]
            self.lower_better = cfg.get("lower_better", False)
            self.score_range = cfg.get("score_range")
            self.as_loss, self.loss_reduction = as_loss, loss_reduction

        def forward(self, x, ref=None):
            with torch.set_grad_enabled(self.as_loss):
                out = self.net(x) if ref is None else self.net(x, ref)
            return out.mean() if self.as_loss and self.loss_reduction == "mean" else out

    def create_metric(name, as_loss=False, device=None, **kwargs):
        rec.create_kwargs.append(dict(name=name, as_loss=as_loss, device=device, **kwargs))
        rec.cache_at_create.append(dl.DEFAULT_CACHE_DIR)
        return InferenceModel(name, as_loss=as_loss, device=device, **kwargs)

    pkg.create_metric = create_metric
    for mod in (pkg, utils, dl, archs, arch_mod, registry, configs):
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
    rec.dl = dl
    return rec


@pytest.fixture()
def fake(monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    return _install_fake_pyiqa(monkeypatch, cache)


def test_missing_pyiqa_tells_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyiqa", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "iqaguard\[pyiqa\]"'):
        PyiqaMetric("lpips")


def test_missing_weight_file_names_file_and_folder(fake, tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        PyiqaMetric("fakenet")
    msg = str(err.value)
    assert "FakeNet_koniq-1234abcd.pth" in msg and str(tmp_path / "cache") in msg and "allow_download=True" in msg
    assert fake.create_kwargs == [] and fake.downloads == []  # refused before pyiqa was even asked


def test_weights_found_in_cache_or_weights_dir(fake, tmp_path):
    (tmp_path / "cache" / "FakeNet_koniq-1234abcd.pth").write_bytes(b"w")
    m = PyiqaMetric("fakenet")
    assert fake.downloads == []
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "FakeNet_ava-1.pth").write_bytes(b"w")
    PyiqaMetric("fakenet", weights_dir=mine, pretrained="ava")
    assert fake.cache_at_create[-1] == str(mine)  # pyiqa looked in weights_dir while creating
    assert fake.dl.DEFAULT_CACHE_DIR == str(tmp_path / "cache")  # and the default is restored
    assert m.kind == "nr" and not m.lower_better and m.bounds == Bounds(worst=0.0, best=3.0)


def test_download_guard_catches_files_the_table_does_not_name(fake, tmp_path):
    with pytest.raises(MissingWeightsError, match="backbone-99.pth") as err:
        PyiqaMetric("fakehidden")
    assert str(tmp_path / "cache") in str(err.value) and fake.downloads == []
    assert fake.dl.download_url_to_file.__name__ == "download_url_to_file"  # restored after the error
    assert torch.hub.download_url_to_file.__name__ == "download_url_to_file"


def test_allow_download_passes_through(fake, tmp_path):
    m = PyiqaMetric("fakenet", allow_download=True)
    assert [Path(dst).name for _, dst in fake.downloads] == ["FakeNet_koniq-1234abcd.pth"]
    assert (tmp_path / "cache" / "FakeNet_koniq-1234abcd.pth").is_file()
    assert m(X).shape == (3,)


def test_create_metric_is_asked_for_unreduced_loss_mode(fake):
    PyiqaMetric("fakefr", device="cpu")
    kw = fake.create_kwargs[-1]
    assert kw["as_loss"] is True and kw["loss_reduction"] == "none" and kw["device"] == torch.device("cpu")


def test_kind_direction_bounds_and_gradients_from_pyiqa(fake):
    m = METRICS.create("pyiqa:fakefr")
    assert isinstance(m, PyiqaMetric) and m.name == "pyiqa:fakefr"
    assert m.kind == "fr" and m.lower_better is True
    assert m.bounds == Bounds(worst=1.0, best=0.0)  # lower-better: worst is the top of "0, ~1"
    x = X.clone().requires_grad_(True)
    ref = X.flip(0)
    out = m(x, ref)
    assert out.shape == (3,)
    torch.testing.assert_close(out, (X - ref).abs().mean(dim=(1, 2, 3)))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bounds_user_given_or_error_when_range_is_open(fake):
    with pytest.raises(InputError, match="calibrate"):
        PyiqaMetric("fakeunbounded")
    assert PyiqaMetric("fakeunbounded", bounds=(0.5, 0.0)).bounds == Bounds(worst=0.5, best=0.0)


def test_unknown_pyiqa_name_suggests_close_matches(fake):
    with pytest.raises(UnknownNameError, match="pyiqa:fakenet"):
        PyiqaMetric("fakenett")


def test_expected_weight_files_reads_the_arch_table(fake):
    pyiqa = sys.modules["pyiqa"]
    assert adapters.expected_weight_files(pyiqa, "fakenet", {}) == ["FakeNet_koniq-1234abcd.pth"]
    assert adapters.expected_weight_files(pyiqa, "fakenet", {"pretrained": "ava"}) == ["FakeNet_ava-1.pth"]
    assert adapters.expected_weight_files(pyiqa, "fakefr", {}) == []
    url = {"pretrained_model_path": "https://example.invalid/x/custom.pth"}
    assert adapters.expected_weight_files(pyiqa, "fakenet", url) == ["custom.pth"]


def test_grad_mode_is_restored_when_pyiqa_switches_it_globally(fake, monkeypatch):
    pyiqa = sys.modules["pyiqa"]
    create = pyiqa.create_metric

    def leaky_create(*args, **kwargs):
        torch.set_grad_enabled(False)  # as if the library switched it globally while building
        net = create(*args, **kwargs)
        forward = net.forward

        def leaky_forward(x, ref=None):
            torch.set_grad_enabled(True)
            return forward(x, ref)

        net.forward = leaky_forward
        return net

    monkeypatch.setattr(pyiqa, "create_metric", leaky_create)
    assert torch.is_grad_enabled()
    m = PyiqaMetric("fakefr")
    assert torch.is_grad_enabled()
    with torch.no_grad():
        s = m(X, X.flip(0))
        assert not torch.is_grad_enabled()
    assert not s.requires_grad  # under no_grad the scores come back detached
    x = X.clone().requires_grad_(True)
    m(x, X.flip(0)).sum().backward()
    assert x.grad is not None and torch.is_grad_enabled()


def test_hugging_face_offline_miss_becomes_missing_weights_error(fake):
    class LocalEntryNotFoundError(FileNotFoundError):
        pass

    LocalEntryNotFoundError.__module__ = "huggingface_hub.errors"

    def hf_hub_download(repo_id, filename):
        raise LocalEntryNotFoundError("cannot find the requested files in the local cache")

    with pytest.raises(MissingWeightsError) as err:
        with adapters.offline_guard("pyiqa metric 'x'", allow_download=False):
            hf_hub_download("org/weights", "model.safetensors")
    msg = str(err.value)
    assert "'model.safetensors'" in msg and "'org/weights'" in msg and "\n" not in msg
    # opted in but offline: the same miss is one line too, saying the download failed and the fix
    with pytest.raises(MissingWeightsError) as err:
        with adapters.offline_guard("pyiqa metric 'x'", allow_download=True):
            hf_hub_download("org/weights", "model.safetensors")
    msg = str(err.value)
    assert "could not download the file 'model.safetensors'" in msg and "huggingface-cli download org/weights" in msg
    assert "\n" not in msg


def test_offline_guard_refuses_torch_hub_and_drops_only_download_notices(capsys):
    expected = r"'w\.pth', not found in /nowhere \(download it from https://e\.invalid/w\.pth\)"
    with pytest.raises(MissingWeightsError, match=expected):
        with adapters.offline_guard("piq metric 'lpips'", allow_download=False):
            print("Loading the network")
            print('Downloading: "https://e.invalid/w.pth" to /nowhere/w.pth')
            torch.hub.download_url_to_file("https://e.invalid/w.pth", "/nowhere/w.pth")
    assert capsys.readouterr().out == "Loading the network\n"
    assert torch.hub.download_url_to_file.__name__ == "download_url_to_file"


def test_optional_import_errors_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "piq", None)
    expected = r'^piq metrics need the optional extra: pip install "iqaguard\[piq\]"$'
    with pytest.raises(MissingDependencyError, match=expected):
        adapters.import_optional("piq", "piq", "piq metrics")

    def broken(name):
        raise RuntimeError("operator torchvision::nms\n does not exist")

    monkeypatch.setattr(adapters.importlib, "import_module", broken)
    with pytest.raises(MissingDependencyError) as err:
        adapters.import_optional("broken_extra", "piq", "piq metrics")
    msg = str(err.value)
    assert "torchvision::nms does not exist" in msg and 'pip install torch==' in msg and '"iqaguard[piq]"' in msg
    assert "\n" not in msg


def test_a_module_only_one_metric_imports_is_a_missing_dependency(fake, monkeypatch):
    def create_metric(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'icecream'", name="icecream")

    monkeypatch.setattr(sys.modules["pyiqa"], "create_metric", create_metric)
    expected = r"^pyiqa metric 'fakefr' needs the Python module 'icecream'.*pip install icecream\)$"
    with pytest.raises(MissingDependencyError, match=expected):
        PyiqaMetric("fakefr")


def test_downloads_are_opt_in_through_the_environment_too(fake, tmp_path, monkeypatch):
    """The CLI and benchmark workers pass no allow_download: IQAGUARD_ALLOW_DOWNLOAD=1 opts in."""
    monkeypatch.delenv(adapters.ALLOW_DOWNLOAD_ENV, raising=False)
    with pytest.raises(MissingWeightsError, match=r"allow_download=True \(Python, spec kwargs\) or "
                                                   r"IQAGUARD_ALLOW_DOWNLOAD=1"):
        PyiqaMetric("fakenet")
    assert fake.downloads == []
    monkeypatch.setenv(adapters.ALLOW_DOWNLOAD_ENV, "1")
    PyiqaMetric("fakenet")
    assert [Path(dst).name for _, dst in fake.downloads] == ["FakeNet_koniq-1234abcd.pth"]
    # an explicit allow_download=False wins over the environment
    (tmp_path / "cache" / "FakeNet_koniq-1234abcd.pth").unlink()
    with pytest.raises(MissingWeightsError, match="FakeNet_koniq-1234abcd.pth"):
        PyiqaMetric("fakenet", allow_download=False)


def test_an_allowed_download_without_network_is_one_line_naming_file_url_and_folder(monkeypatch):
    import urllib.error

    def no_network(url, dst, *args, **kwargs):
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(MissingWeightsError) as err:
        with adapters.offline_guard("piq metric 'lpips'", allow_download=True):
            torch.hub.download_url_to_file("https://e.invalid/w.pth", "/nowhere/w.pth")
    msg = str(err.value)
    assert "\n" not in msg and "'w.pth' from https://e.invalid/w.pth into /nowhere" in msg
    assert "Network is unreachable" in msg and "put the file there by hand" in msg
    assert torch.hub.download_url_to_file is no_network  # restored
    # a failure that is not the network's still surfaces as itself
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        with adapters.offline_guard("piq metric 'lpips'", allow_download=True):
            torch.hub.download_url_to_file("https://e.invalid/w.pth", "/nowhere/w.pth")
