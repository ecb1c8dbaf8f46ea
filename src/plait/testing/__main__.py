"""``python -m plait.testing [PORT]``: serve the OpenAI-compatible stub until killed."""

import sys
import threading

from plait.testing.openai_stub import OpenAIStubServer

server = OpenAIStubServer(int(sys.argv[1]) if len(sys.argv) > 1 else 8000).start()
print(server.url, flush=True)
threading.Event().wait()
