"""Scenario loading: .sumocfg and .net.xml inputs, overrides, horizon, and error cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.scenario import DEFAULT_HORIZON_S, Scenario, ScenarioError, load_scenario, parse_time

RESCO = Path(__file__).resolve().parents[1].parent / "shared/scenarios/resco"


def _touch(path: Path, text: str = "<x/>") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _cfg(path: Path, body: str) -> Path:
    return _touch(path, f"<configuration>{body}</configuration>")


@pytest.fixture
def files(tmp_path: Path) -> Path:
    for name in ("city.net.xml", "a.rou.xml", "b.rou.xml", "c.rou.xml", "det.add.xml", "sub/prog.add.xml"):
        _touch(tmp_path / name)
    return tmp_path


def test_sumocfg_lists_are_split_and_resolved_relative_to_the_cfg(files: Path, monkeypatch) -> None:
    """Comma- and space-separated lists; paths relative to the cfg, not to the cwd."""
    cfg = _cfg(
        files / "city.sumocfg",
        '<input><net-file value="city.net.xml"/><route-files value="a.rou.xml, b.rou.xml c.rou.xml"/>'
        '<additional-files value="det.add.xml,sub/prog.add.xml"/></input>'
        '<time><begin value="25200"/><end value="28800"/></time>',
    )
    monkeypatch.chdir(files / "sub")
    sc = load_scenario(cfg)
    assert sc.name == "city"
    assert sc.net == (files / "city.net.xml").resolve()
    assert sc.routes == tuple((files / n).resolve() for n in ("a.rou.xml", "b.rou.xml", "c.rou.xml"))
    assert sc.additional == ((files / "det.add.xml").resolve(), (files / "sub/prog.add.xml").resolve())
    assert sc.begin == 25200.0
    assert sc.unapplied == ()  # (files, begin and end are all the evaluation reads)
    # the cfg's own end (28800) is ignored: the protocol runs up to 3 h after begin
    assert sc.end == 25200.0 + DEFAULT_HORIZON_S
    assert sc.horizon_s == DEFAULT_HORIZON_S


def test_arguments_override_the_cfg(files: Path) -> None:
    cfg = _cfg(
        files / "city.sumocfg",
        '<input><net-file value="city.net.xml"/><route-files value="a.rou.xml"/></input>'
        '<time><begin value="100"/><end value="200"/></time>',
    )
    sc = load_scenario(cfg, routes=[files / "b.rou.xml"], begin=50, end=400)
    assert sc.routes == ((files / "b.rou.xml").resolve(),)
    assert (sc.begin, sc.end) == (50.0, 400.0)
    assert sc.additional == ()
    assert load_scenario(cfg, begin=10).end == 10 + DEFAULT_HORIZON_S


def test_options_the_evaluation_does_not_apply_are_listed(files: Path) -> None:
    """A step length, a seed or a teleport time of the cfg would be silently lost otherwise."""
    cfg = _cfg(
        files / "city.sumocfg",
        '<input><net-file value="city.net.xml"/><route-files value="a.rou.xml"/></input>'
        '<time><begin value="0"/><step-length value="0.5"/></time>'
        '<processing><time-to-teleport value="-1"/></processing><random_number><seed value="7"/></random_number>',
    )
    assert load_scenario(cfg).unapplied == ("step-length=0.5", "time-to-teleport=-1", "seed=7")


def test_cfg_without_sections_and_short_names(files: Path) -> None:
    """SUMO ignores the section elements and accepts short option names; so do we."""
    cfg = _cfg(files / "flat.sumocfg", '<n value="city.net.xml"/><r value="a.rou.xml"/><b value="1:00:00"/>')
    sc = load_scenario(cfg)
    assert sc.begin == 3600.0 and sc.name == "flat"


def test_net_xml_needs_routes(files: Path) -> None:
    with pytest.raises(ScenarioError, match="routes"):
        load_scenario(files / "city.net.xml")
    sc = load_scenario(files / "city.net.xml", routes=[files / "a.rou.xml"], end=900)
    assert isinstance(sc, Scenario)
    assert sc.name == "city"
    assert (sc.begin, sc.end) == (0.0, 900.0)
    assert load_scenario(files / "city.net.xml", routes=files / "a.rou.xml").end == DEFAULT_HORIZON_S


@pytest.mark.parametrize(
    "body, message",
    [
        ('<input><net-file value="missing.net.xml"/><route-files value="a.rou.xml"/></input>', "missing.net.xml"),
        ('<input><net-file value="city.net.xml"/><route-files value="a.rou.xml,nope.rou.xml"/></input>', "nope.rou.xml"),
        ('<input><net-file value="city.net.xml"/><route-files value="a.rou.xml"/>'
         '<additional-files value="gone.add.xml"/></input>', "gone.add.xml"),
        ('<input><route-files value="a.rou.xml"/></input>', "net-file"),
        ('<input><net-file value="city.net.xml"/></input>', "no route files"),
        ('<input><net-file value="city.net.xml"/><route-files value="a.rou.xml"/></input>'
         '<time><begin value="soon"/></time>', "time value"),
    ],
)
def test_bad_cfg_raises_a_clear_error(files: Path, body: str, message: str) -> None:
    cfg = _cfg(files / "bad.sumocfg", body)
    with pytest.raises(ScenarioError, match=message):
        load_scenario(cfg)


def test_missing_or_unparsable_files(files: Path) -> None:
    with pytest.raises(ScenarioError, match="not found"):
        load_scenario(files / "nothing.sumocfg")
    _touch(files / "broken.sumocfg", "<configuration><input>")
    with pytest.raises(ScenarioError, match="cannot parse"):
        load_scenario(files / "broken.sumocfg")
    with pytest.raises(ScenarioError, match="route file not found"):
        load_scenario(files / "city.net.xml", routes=[files / "absent.rou.xml"])
    with pytest.raises(ScenarioError, match=r"\.sumocfg or a \.net\.xml"):
        load_scenario(files / "a.rou.xml")
    with pytest.raises(ScenarioError, match="after begin"):
        load_scenario(files / "city.net.xml", routes=[files / "a.rou.xml"], begin=100, end=50)


def test_scenario_error_is_a_value_error() -> None:
    assert issubclass(ScenarioError, ValueError)


@pytest.mark.parametrize("text, seconds", [("25200", 25200.0), ("1.5", 1.5), ("7:00:00", 25200.0), ("1:00", 60.0), ("1:0:0:1", 86401.0)])
def test_parse_time(text: str, seconds: float) -> None:
    assert parse_time(text) == seconds


@pytest.mark.skipif(not RESCO.is_dir(), reason="RESCO scenarios not present")
def test_resco_cologne1_cfg() -> None:
    sc = load_scenario(RESCO / "cologne1" / "cologne1.sumocfg")
    assert sc.name == "cologne1"
    assert sc.net.name == "cologne1.net.xml" and sc.net.is_file()
    assert [r.name for r in sc.routes] == ["cologne1.rou.xml"]
    assert (sc.begin, sc.end) == (25200.0, 36000.0)
