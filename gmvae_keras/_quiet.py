"""Keep TensorFlow's C++ start-up notices off the terminal.

`TF_CPP_MIN_LOG_LEVEL` alone does not silence

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 ... port.cc:153] oneDNN custom operations are on. ...
    I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.

TensorFlow 2.21 logs through absl, and reads `TF_CPP_MIN_LOG_LEVEL` in a
static constructor of libtensorflow_framework.so (logging_initializer.cc). Two other static
constructors of that library log first: threadpool_device.cc's (oneDNN notice, via
`IsMklEnabled`) and the CUDA stub's (no driver). The level is not set yet, and absl prints
everything to stderr until `absl::InitializeLog()`, which TensorFlow never calls. The profiler
plugin (_pywrap_profiler_plugin.so) carries its own copy of that code and prints the same
lines again later in `import tensorflow`. No environment variable read before those
constructors turns them off, except `TF_ENABLE_ONEDNN_OPTS=0`, which also changes the
numerics. So `quiet_tensorflow` imports TensorFlow with the process's stderr (file descriptor
2, where C++ writes) diverted to a file, then writes back every line except these notices.
"""

import contextlib
import os
import sys
import tempfile

# Substrings of the start-up lines that are dropped.
STARTUP_NOTICES = (
    b"All log messages before absl::InitializeLog() is called are written to STDERR",
    b"oneDNN custom operations are on",
    b"Could not find cuda drivers on your machine",
)


def quiet_tensorflow():
    """Import TensorFlow without its start-up notices, unless the user asked for its logs.

    Call it before anything imports TensorFlow (keras included). A `TF_CPP_MIN_LOG_LEVEL`
    set by the user is kept; at 0 (show everything) the import is left alone.
    """
    # The level still counts for what TensorFlow logs after start-up (e.g. cpu_feature_guard's
    # note on unused CPU instructions, thread-pool notices), and must be set before the import.
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or _as_level(level) == 0:
        return
    with _dropping_lines(STARTUP_NOTICES):
        import tensorflow  # noqa: F401


def _as_level(value):
    # As TensorFlow reads it: anything that is not an integer means 0.
    try:
        return int(value)
    except ValueError:
        return 0


@contextlib.contextmanager
def _dropping_lines(substrings):
    """Divert file descriptor 2 to a file; on exit write back the lines that contain none of `substrings`."""
    sys.stderr.flush()
    saved = os.dup(2)
    # A file, not a pipe: nothing must read while the import runs, however much is written.
    with tempfile.TemporaryFile() as diverted:
        os.dup2(diverted.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            diverted.seek(0)
            kept = b"".join(line for line in diverted if not any(s in line for s in substrings))
            while kept:
                kept = kept[os.write(2, kept) :]
