"""OpenVINO in a long-lived process: models built and dropped in any order leave it sound."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Two models compiled, dropped in the order they came, then a signal that Python handles (as a
# child's SIGCHLD is, once torch's DataLoader has set its handler): before the one shared Core,
# each model's own CPU plugin left the thread's signal stack unmapped and this died of SIGSEGV.
SCRIPT = textwrap.dedent("""
    import gc, os, signal, sys
    from efficientdet.inference.backends import openvino_backend
    signal.signal(signal.SIGUSR1, lambda *_: print("handled", flush=True))
    first, second = openvino_backend(sys.argv[1]), openvino_backend(sys.argv[1])
    del first
    gc.collect()
    del second
    gc.collect()
    os.kill(os.getpid(), signal.SIGUSR1)
    print("alive", flush=True)
""")


def test_models_dropped_in_any_order_leave_signals_handled(exported):
    for precision in ("float32", "int8"):
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(exported.files["openvino", precision])],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (precision, proc.returncode, proc.stderr[-2000:])
        assert proc.stdout.split() == ["handled", "alive"], proc.stdout
