"""Probes of load_spec on bad input: binary files, YAML syntax errors, empty / non-mapping files and
unknown constructor kwargs each give one plain line of SpecError naming the file and the fix."""
from __future__ import annotations

from pathlib import Path

import pytest

from iqaguard.bench.spec import Spec, SpecError, load_plugins, load_spec
from iqaguard.errors import IqaguardError
from iqaguard.registry import DATASETS

(TOYS,) = load_plugins([str(Path(__file__).with_name("test_runner.py"))])


def _load_error(tmp_path: Path, content: bytes) -> str:
    f = tmp_path / "spec.yaml"
    f.write_bytes(content)
    with pytest.raises(SpecError) as e:
        load_spec(f)
    assert isinstance(e.value, IqaguardError)
    return str(e.value)


@pytest.mark.parametrize("content, at", [(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 0),
                                         (b"metrics: [psnr]\x00\x01\x02", 15),
                                         (b"metrics: [ps\xffnr]\n", 12)])
def test_binary_file_is_one_line_error(tmp_path, content, at):
    msg = _load_error(tmp_path, content)
    assert msg.startswith(f"{tmp_path / 'spec.yaml'} is not a text YAML file (binary content at byte {at}); "
                          "pass a benchmark spec such as ")
    assert "demo.yaml" in msg and "\n" not in msg and "UnicodeDecodeError" not in msg


def test_yaml_syntax_error_keeps_line_column_and_excerpt(tmp_path):
    msg = _load_error(tmp_path, b"metrics: [a, b\ndatasets: [toy]\n")
    assert msg.startswith(f"invalid benchmark spec {tmp_path / 'spec.yaml'}: not valid YAML: ")
    assert "at line 2, column 9 ('datasets: [toy]')" in msg
    assert "while parsing a flow sequence started at line 1, column 10 ('metrics: [a, b')" in msg
    assert "\n" not in msg
    msg = _load_error(tmp_path, b"metrics: [a, b\n")
    assert "line 1, column 10 ('metrics: [a, b')" in msg and "end of file" in msg and "\n" not in msg
    msg = _load_error(tmp_path, b"metrics: [toy-nr]\n  bad: : x\n")
    assert "line 2, column 3 ('bad: : x')" in msg and "\n" not in msg


@pytest.mark.parametrize("content", [b"", b"# only a comment\n", b"\n\n"])
def test_empty_file(tmp_path, content):
    msg = _load_error(tmp_path, content)
    assert msg.startswith(f"invalid benchmark spec {tmp_path / 'spec.yaml'}: the file is empty; give a mapping "
                          "with metrics, datasets, attacks (see ")
    assert "\n" not in msg


@pytest.mark.parametrize("content, kind", [(b"- metrics\n- datasets\n", "list"), (b"demo\n", "string"),
                                           (b"42\n", "number")])
def test_top_level_not_a_mapping(tmp_path, content, kind):
    msg = _load_error(tmp_path, content)
    assert f"spec.yaml: the top level is a {kind}, expected a mapping with metrics, datasets, attacks" in msg
    assert "\n" not in msg


def test_unknown_dataset_kwarg_suggests_and_lists_allowed(tmp_path):
    msg = _load_error(tmp_path, b"metrics: [toy-nr]\ndatasets: [{name: builtin-kadid, kwargs: {splt: test}}]\n"
                                b"attacks: [toy-step]\nimports: [" + str(Path(TOYS.__file__)).encode() + b"]\n")
    line = next(ln for ln in msg.splitlines() if "kwargs" in ln)
    assert line.strip() == ("datasets[0].kwargs: unknown key 'splt' for dataset 'builtin-kadid'; did you mean "
                            "'split'? allowed: split, seed, root, size, progress, sources, workers")
    assert msg.count("\n") == 1  # header + this one problem


def test_kwargs_checked_against_the_factory_signature():
    def open_kwargs(**kwargs):  # a factory taking **kwargs accepts any key
        return TOYS.toy_dataset()

    if "probe-open-kwargs" not in DATASETS:
        DATASETS.register("probe-open-kwargs")(open_kwargs)
    Spec.model_validate(TOYS.toy_spec(datasets=[{"name": "probe-open-kwargs", "kwargs": {"splt": 1}}]))
    with pytest.raises(SpecError, match=r"datasets\[1\]\.kwargs: unknown key 'zzz' for dataset 'builtin-kadid'; "
                                        r"allowed: split, seed"):
        Spec.model_validate(TOYS.toy_spec(datasets=["toy", {"name": "builtin-kadid", "kwargs": {"zzz": 1}}]))
    # valid kwargs pass; factories taking **kwargs accept any key
    Spec.model_validate(TOYS.toy_spec(datasets=[{"name": "builtin-kadid", "kwargs": {"split": "test"}}]))
    Spec.model_validate(TOYS.toy_spec(defenses=[{"name": "jpeg", "kwargs": {"whatever": 2}}]))
    # attacks have typed signatures (the shared parameter mechanism): an unknown key is caught at load
    with pytest.raises(SpecError, match=r"attacks\[0\]\.kwargs: unknown key 'anything' for attack 'ifgsm'; "
                                        r"allowed: eps, steps, alpha"):
        Spec.model_validate(TOYS.toy_spec(attacks=[{"name": "ifgsm", "kwargs": {"anything": 1}}]))
