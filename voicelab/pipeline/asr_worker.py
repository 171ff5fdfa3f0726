"""The worker process of :class:`voicelab.pipeline.asr.ProcessRecognizer` (``python -m voicelab.pipeline.asr_worker``)."""

import sys

from voicelab.pipeline.asr import _serve

if __name__ == "__main__":  # pragma: no cover - runs in the worker process
    _serve(sys.stdin.buffer, sys.stdout.buffer, sys.argv[1] if len(sys.argv) > 1 else None)
