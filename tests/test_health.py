

def test_evaluate_refuses_bad_faults_clearly():
    """A fault that cannot be parsed, or one asked of SUMO's own controller, is a one-line error, exit 2."""
    import subprocess
    import sys

    run = lambda *a: subprocess.run([sys.executable, "-m", "engine", "evaluate", "sim/scenarios/demo/demo.sumocfg",  # noqa: E731
                                     *a], capture_output=True, text=True, timeout=120)
    r = run("--controller", "max-pressure", "--inject-fault", "L:x=melting")
    assert r.returncode == 2 and "unknown kind 'melting'" in r.stderr and "stuck_on" in r.stderr
    r = run("--controller", "sumo-static", "--inject-fault", "L:x=silent")
    assert r.returncode == 2 and "engine controller" in r.stderr
