"""The Python API, the daemon client and the training-framework callbacks (with light stand-ins)."""

from __future__ import annotations

import json
import socket
import sys
import threading
import types
from pathlib import Path

import pytest

import polythrottle as pt
from polythrottle.daemon.client import DaemonError, notify_model_updated
from polythrottle.errors import BadInputError
from polythrottle.integrations import CheckpointRetuner


def test_tune_apply_restore_and_retune(small_table: Path, tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    dev = pt.open_device(f"replay:{small_table}", noise=0.01, seed=0)
    res = pt.tune(dev, 50.0, budget=6, seed=0, history=db, model_version="v1")
    assert isinstance(res, pt.TuneResult) and res.best is not None
    assert res.extra["model_version"] == "v1" and res.extra["warm_start"] is None
    with pt.applied(dev, res.best.config) as cfg:
        m, truth = dev.measure(), dev.truth(cfg)  # measured under cfg (1% noise)
        assert cfg == res.best.config and m.energy_j == pytest.approx(truth.energy_j, rel=0.06)
        assert m.latency_ms == pytest.approx(truth.latency_ms, rel=0.06)
    again = pt.retune(f"replay:{small_table}", 50.0, budget=3, seed=1, history=db, model_version="v2")
    assert again.extra["warm_start"]["from_version"] == "v1"
    with pt.HistoryStore(db) as s:
        assert len(s.observations(_only_key(s))) == len(res.history) + len(again.history)


def _only_key(store: pt.HistoryStore) -> pt.HistoryKey:
    (key,) = store.keys()
    return key


class RecordingDevice:
    """Wraps a device; records restore() calls."""

    def __init__(self, dev) -> None:
        self.dev, self.restored = dev, 0

    def __getattr__(self, name):
        return getattr(self.dev, name)

    def restore(self) -> None:
        self.restored += 1


def test_applied_restores_on_exception_and_rejects_bad_config(small_table: Path) -> None:
    dev = RecordingDevice(pt.open_device(f"replay:{small_table}"))
    with pytest.raises(RuntimeError):
        with pt.applied(dev, {"gpu_mhz": 300.0, "batch_size": 2}):
            raise RuntimeError("boom")
    assert dev.restored == 1
    with pytest.raises(BadInputError):
        pt.apply(dev, {"gpu_mhz": 301.0})
    with pytest.raises(BadInputError):
        with pt.applied(dev, {"nope": 1}):
            pass
    assert pt.apply(dev, {"batch_size": 4})["batch_size"] == 4  # the rest from the default config


def test_api_bad_input(small_table: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="version"):
        pt.retune(f"replay:{small_table}", 50.0, history=tmp_path / "h.sqlite")
    with pytest.raises(BadInputError, match="history"):
        pt.retune(f"replay:{small_table}", 50.0, history=None, model_version="v2")
    with pytest.raises(BadInputError, match="give model_version= or model_files=, not both"):
        pt.model_version_of("v1", model_files=[str(small_table)])
    assert pt.model_version_of(model_files=[str(small_table)]).startswith("sha256:")


@pytest.mark.parametrize("kwargs, message", [
    ({"device": "sim:no-such-board", "workload": "resnet50"}, "unknown profile"),
    ({"device": "sim:jetson-orin-nano", "workload": "no-such-model"}, "unknown workload"),
    ({"knobs": ["volts"]}, "unknown knob 'volts'"),
    ({"baseline": {"gpu_mhz": 123}}, "gpu_mhz=123 is not a valid step"),
])
def test_api_bad_input_creates_no_history(small_table: Path, tmp_path: Path, kwargs: dict, message: str) -> None:
    """A tune refused for bad input writes nothing: the history database it names is not created."""
    history = tmp_path / "sub" / "h.sqlite"
    kwargs = {"device": f"replay:{small_table}", **kwargs}
    with pytest.raises(BadInputError, match=message):
        pt.tune(kwargs.pop("device"), 50.0, budget=3, history=history, model_version="v1", **kwargs)
    assert not history.exists() and not history.parent.exists()


def test_api_refuses_wrong_types_with_typed_errors(small_table: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="device=: must be a device spec"):
        pt.tune(None, 50.0)  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="history=: must be a history store"):
        pt.tune(f"replay:{small_table}", 50.0, budget=3, history=5)  # type: ignore[arg-type]
    # one file named as text is one file (it was read letter by letter: "/" hashed the whole filesystem)
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights")
    assert pt.model_version_of(model_files=str(weights)) == pt.model_version_of(model_files=[weights])  # type: ignore[arg-type]


class FakeDaemon:
    """A Unix-socket server answering one JSON line per connection (the daemon's protocol)."""

    def __init__(self, path: Path, reply: dict) -> None:
        self.path, self.reply, self.requests = path, reply, []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                buf = b""
                while not buf.endswith(b"\n"):
                    buf += conn.recv(4096)
                self.requests.append(json.loads(buf))
                conn.sendall((json.dumps(self.reply) + "\n").encode())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def short_tmp():
    import tempfile

    with tempfile.TemporaryDirectory(dir="/tmp") as d:  # AF_UNIX paths must be short
        yield Path(d)


def test_notify_model_updated_round_trip_and_errors(short_tmp: Path) -> None:
    path = short_tmp / "c.sock"
    d = FakeDaemon(path, {"ok": True, "retuning": True})
    try:
        assert notify_model_updated(path, model_version="v7", model_files=["/m.pt"])["retuning"] is True
        assert d.requests == [{"command": "model-updated", "model_version": "v7", "model_files": ["/m.pt"]}]
        d.reply = {"ok": False, "error": "unknown model"}
        with pytest.raises(DaemonError, match="unknown model"):
            notify_model_updated(path)
    finally:
        d.close()
    with pytest.raises(DaemonError, match="no daemon control socket"):
        notify_model_updated(short_tmp / "missing.sock")


def test_checkpoint_retuner_modes(small_table: Path, tmp_path: Path, short_tmp: Path) -> None:
    with pytest.raises(BadInputError):
        CheckpointRetuner()
    with pytest.raises(BadInputError):
        CheckpointRetuner(device="replay:x.csv", slo_ms=10, notify=True)
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"v1-weights")
    r = CheckpointRetuner(device=f"replay:{small_table}", slo_ms=50.0, budget=3, history=tmp_path / "h.sqlite",
                          tune_kwargs={"seed": 0})
    r.checkpoint_saved(path=ckpt)
    ckpt.write_bytes(b"v2-weights")
    r.checkpoint_saved(path=ckpt)
    assert len(r.results) == 2 and r.last_error is None
    assert r.results[1].extra["warm_start"]["from_version"] == r.results[0].extra["model_version"]
    # notify mode: an unreachable daemon is logged, training goes on; raise_errors makes it fatal
    n = CheckpointRetuner(notify=True, socket_path=short_tmp / "none.sock")
    n.checkpoint_saved(model_version="v3")
    assert isinstance(n.last_error, DaemonError)
    with pytest.raises(DaemonError):
        CheckpointRetuner(notify=True, socket_path=short_tmp / "none.sock", raise_errors=True).checkpoint_saved(
            model_version="v3")


def _install_stand_in(monkeypatch: pytest.MonkeyPatch, module: str, **attrs) -> None:
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        mod = sys.modules.get(name) if name in sys.modules else types.ModuleType(name)
        monkeypatch.setitem(sys.modules, name, mod)
    for k, v in attrs.items():
        setattr(sys.modules[module], k, v)


def test_lightning_callback_with_stand_in(monkeypatch: pytest.MonkeyPatch, short_tmp: Path) -> None:
    import torch

    class Callback:  # the Lightning base class, as far as the callback uses it
        pass

    _install_stand_in(monkeypatch, "lightning.pytorch.callbacks", Callback=Callback)
    monkeypatch.delitem(sys.modules, "polythrottle.integrations.lightning", raising=False)
    from polythrottle.integrations.lightning import PolyThrottleCallback

    d = FakeDaemon(short_tmp / "c.sock", {"ok": True})
    try:
        cb = PolyThrottleCallback(notify=True, socket_path=short_tmp / "c.sock")
        model = torch.nn.Linear(2, 2)
        ckpt_file = short_tmp / "epoch=0.ckpt"
        trainer = types.SimpleNamespace(checkpoint_callbacks=[types.SimpleNamespace(last_model_path=str(ckpt_file),
                                                                                    best_model_path="")])
        cb.on_save_checkpoint(trainer, model, {"state_dict": model.state_dict()})
        assert d.requests == []  # the file is not written yet: nothing sent
        ckpt_file.write_bytes(b"x")
        cb.on_train_batch_start(trainer, model, None, 0)
        cb.on_train_end(trainer, model)  # nothing pending: nothing more sent
        assert len(d.requests) == 1 and d.requests[0]["command"] == "model-updated"
        assert d.requests[0]["model_version"] == pt.model_version_of(model=model)
        assert "model_files" not in d.requests[0]  # the daemon takes only files of its own config
    finally:
        d.close()


def test_hf_callback_with_stand_in(monkeypatch: pytest.MonkeyPatch, small_table: Path, tmp_path: Path) -> None:
    import torch

    class TrainerCallback:
        pass

    _install_stand_in(monkeypatch, "transformers", TrainerCallback=TrainerCallback)
    monkeypatch.delitem(sys.modules, "polythrottle.integrations.hf", raising=False)
    from polythrottle.integrations.hf import PolyThrottleCallback

    cb = PolyThrottleCallback(device=f"replay:{small_table}", slo_ms=50.0, budget=3, history=tmp_path / "h.sqlite",
                              background=True)
    model = torch.nn.Linear(2, 2)
    args = types.SimpleNamespace(output_dir=str(tmp_path))
    control = object()
    assert cb.on_save(args, types.SimpleNamespace(global_step=10), control, model=model) is control
    assert cb.on_train_end(args, types.SimpleNamespace(global_step=10), control) is control  # waits
    assert len(cb.retuner.results) == 1 and cb.retuner.last_error is None
    assert cb.retuner.results[0].extra["model_version"] == pt.model_version_of(model=model)


def test_integrations_need_their_framework(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.pytorch.callbacks", "pytorch_lightning",
                 "pytorch_lightning.callbacks", "transformers"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    for mod in ("polythrottle.integrations.lightning", "polythrottle.integrations.hf"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
        with pytest.raises(ImportError, match="pip install"):
            __import__(mod)


@pytest.mark.parametrize("kwargs, message", [
    ({"on_record": 5}, "on_record=: must be a function"),
    ({"state_dir": 5, "history": True}, "state_dir=: must be a path"),
    ({"model": 5, "history": "h.sqlite"}, "model=: must be a PyTorch module or a state_dict"),
])
def test_api_refuses_bad_arguments_before_measuring(small_table: Path, tmp_path: Path, monkeypatch, kwargs: dict,
                                                    message: str) -> None:
    """Each a typed one-line error before anything is measured (a bare TypeError mid-tune before)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInputError, match=message):
        pt.tune(f"replay:{small_table}", 50.0, budget=3, **kwargs)
    assert not (tmp_path / "h.sqlite").exists()


@pytest.mark.parametrize("history", [None, False])
@pytest.mark.parametrize("given, name", [
    ({"model_version": "v1"}, "model_version="),
    ({"model_files": ["MODEL"]}, "model_files="),
    ({"model": {}}, "model="),
])
def test_api_refuses_a_model_version_without_a_history(small_table: Path, tmp_path: Path, history, given: dict,
                                                         name: str) -> None:
    """A model version only keys the history: with history=None (the default) or False it was silently ignored."""
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    given = {k: [str(model)] if v == ["MODEL"] else v for k, v in given.items()}
    if "model" in given:
        pytest.importorskip("torch")
    with pytest.raises(BadInputError) as e:
        pt.tune(f"replay:{small_table}", 50.0, budget=3, history=history, **given)
    assert str(e.value) == f"{name} is unused: a model version only keys the history, and this tune keeps none " \
                           f"(history={history})"
    with pytest.raises(BadInputError, match="missing.pt not found"):  # the file's own problem is named first
        pt.tune(f"replay:{small_table}", 50.0, budget=3, history=history, model_files=[tmp_path / "missing.pt"])
    assert pt.tune(f"replay:{small_table}", 50.0, budget=2, history=history, seed=0).extra.get("model_version") is None


def test_api_refuses_a_workload_the_open_device_does_not_measure() -> None:
    with pt.open_device("sim:jetson-orin-nano", workload="resnet50") as dev:
        with pytest.raises(BadInputError, match="workload=bert-base: the device was opened to measure resnet50"):
            pt.tune(dev, 50.0, budget=3, workload="bert-base")
        assert pt.tune(dev, 50.0, budget=3, workload="resnet50", optimizer="random", seed=0).best is not None


def test_retune_names_an_unknown_keyword_with_a_typed_error(small_table: Path, tmp_path: Path) -> None:
    """retune's **kwargs go to tune: a misspelled keyword was a raw TypeError naming tune()."""
    db = tmp_path / "h.sqlite"
    with pytest.raises(BadInputError) as e:
        pt.retune(f"replay:{small_table}", 50.0, history=db, model_version="v2", knbos=["gpu_mhz"])
    message = str(e.value)
    assert message.startswith("knbos=: not an argument of retune (did you mean knobs=?); accepted: baseline, budget,")
    assert "\n" not in message and "warm_start" not in message and "slo_metric" in message and not db.exists()


def test_retune_refuses_warm_start_with_a_typed_error(small_table: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="warm_start=: retune always starts warm"):
        pt.retune(f"replay:{small_table}", 50.0, history=tmp_path / "h.sqlite", model_version="v2", warm_start=False)


def test_notify_sends_the_version_the_real_daemon_accepts(tmp_path: Path, monkeypatch) -> None:
    """The callbacks' checkpoint lies outside the daemon config's model_files: sent as a file it was refused
    ("not one of the daemon config's model_files"), so notify mode never reached the daemon."""
    from polythrottle.daemon import client
    from polythrottle.daemon.config import load_config
    from polythrottle.daemon.service import Daemon

    (tmp_path / "model.bin").write_bytes(b"v1")
    cfg = tmp_path / "daemon.yaml"
    cfg.write_text("device: sim:jetson-agx-orin\nworkload: efficientnet-b0\nslo_ms: 25\nmodel_files: [model.bin]\n"
                   "state_dir: state\nsocket: c.sock\nmetrics: false\n")
    daemon = Daemon(load_config(cfg))

    def answer(path, *, model_version=None, model_files=None, force=False, **kw):
        req = {"command": "model-updated", "model_version": model_version, "model_files": model_files}
        return daemon.handle_request({k: v for k, v in req.items() if v is not None})

    monkeypatch.setattr(client, "notify_model_updated", answer)
    ckpt = tmp_path / "out" / "checkpoint-10"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"weights")
    r = CheckpointRetuner(notify=True, raise_errors=True)
    r.checkpoint_saved(path=ckpt)
    assert r.last_error is None and r.results[0]["model_version"] == pt.model_version_of(model_files=[ckpt])


@pytest.mark.parametrize("kwargs, message", [
    ({"slo_ms": -1}, "slo_ms=: must be >= 0.001"),
    ({"slo_ms": 50, "budget": 1}, "budget=: must be >= 2"),
    ({"slo_ms": 50, "knobs": "a,a"}, "knobs=: lists a knob twice"),
    ({"slo_ms": 50, "history": None}, "re-tuning needs a history"),
    ({"slo_ms": 50, "every": 0.5}, "every must be an integer"),
    ({"slo_ms": 50, "tune_kwargs": {"budget": 3}}, "tune_kwargs: 'budget' is set by the retuner"),
    ({"slo_ms": 50, "tune_kwargs": {"seeed": 3}}, "tune_kwargs: 'seeed' is not an argument"),
])
def test_checkpoint_retuner_checks_its_arguments_when_made(kwargs: dict, message: str) -> None:
    """Refused when training starts, not logged as a warning at the first checkpoint hours later."""
    with pytest.raises(BadInputError, match=message):
        CheckpointRetuner(device="sim:jetson-agx-orin", **kwargs)


def test_background_retune_is_waited_for_at_exit_and_records_any_error(small_table: Path, tmp_path: Path) -> None:
    r = CheckpointRetuner(device=f"replay:{small_table}", slo_ms=50.0, budget=3, history=tmp_path / "h.sqlite",
                          background=True, tune_kwargs={"seed": 0})
    r.checkpoint_saved(model_version="v1")
    assert r._thread is not None and not r._thread.daemon  # a daemon thread is killed mid-tune at exit
    r.wait()
    assert len(r.results) == 1 and r.last_error is None
    r.tune_kwargs = {"on_record": lambda rec: 1 / 0}  # an error that is not a PolyThrottleError
    r.checkpoint_saved(model_version="v2")
    r.wait()
    assert isinstance(r.last_error, ZeroDivisionError)


def test_callbacks_act_on_the_main_process_only(monkeypatch: pytest.MonkeyPatch, short_tmp: Path) -> None:
    import torch

    _install_stand_in(monkeypatch, "transformers", TrainerCallback=type("TrainerCallback", (), {}))
    _install_stand_in(monkeypatch, "lightning.pytorch.callbacks", Callback=type("Callback", (), {}))
    for mod in ("polythrottle.integrations.hf", "polythrottle.integrations.lightning"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    from polythrottle.integrations import hf, lightning

    d = FakeDaemon(short_tmp / "c.sock", {"ok": True})
    try:
        model = torch.nn.Linear(2, 2)
        h = hf.PolyThrottleCallback(notify=True, socket_path=short_tmp / "c.sock")
        args = types.SimpleNamespace(output_dir=str(short_tmp))
        h.on_save(args, types.SimpleNamespace(global_step=5, is_world_process_zero=False), None, model=model)
        l_cb = lightning.PolyThrottleCallback(notify=True, socket_path=short_tmp / "c.sock")
        rank1 = types.SimpleNamespace(is_global_zero=False)
        l_cb.on_save_checkpoint(rank1, model, {"state_dict": model.state_dict()})
        l_cb.on_train_end(rank1, model)
        assert d.requests == []  # rank != 0: nothing
        h.on_save(args, types.SimpleNamespace(global_step=5, is_world_process_zero=True), None, model=model)
        l_cb.on_train_end(types.SimpleNamespace(), model)  # on_train_end without a checkpoint: nothing to do
        assert len(d.requests) == 1
    finally:
        d.close()


def test_api_history_server_out_of_reach_spools_in_the_state_dir(small_table: Path, tmp_path: Path) -> None:
    """The API's spool lies in the state directory (``polythrottle.paths.state_dir``), as the CLI's and the
    daemon's do."""
    state = tmp_path / "state"
    state.mkdir()
    result = pt.tune(f"replay:{small_table}", slo_ms=50, budget=3, optimizer="random", seed=0,
                     history="postgresql://u:secret@127.0.0.1:1/fleet", state_dir=state)
    assert len(result.history) == 3
    assert [p.name for p in state.glob("history-spool-*.sqlite")]
