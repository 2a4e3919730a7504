"""lifelong: continual learning for language models, and the measurement of what they forget."""

from lifelong.config import RunConfig, load_config, parse_config
from lifelong.data import Example, Stream, Task, build_stream, toy_stream
from lifelong.metrics import summary
from lifelong.train import RunResult, resume, run

__version__ = "0.1.0"
__all__ = [
    "Example",
    "RunConfig",
    "RunResult",
    "Stream",
    "Task",
    "build_stream",
    "load_config",
    "parse_config",
    "resume",
    "run",
    "summary",
    "toy_stream",
]
