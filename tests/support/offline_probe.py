"""Run inside a network namespace with only loopback: start a server, chat, embed.

Used by tests/test_offline.py; prints one JSON line with what it saw.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import openai

from tests.support.server import running_server


def main(home: str) -> None:
    interfaces = sorted(name for _, name in socket.if_nameindex())
    with running_server(Path(home)) as server:
        client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="smollm2:135m", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
        )
        vectors = client.embeddings.create(model="gemma3:270m", input=["offline"])
    print(
        json.dumps(
            {
                "interfaces": interfaces,
                "completion_tokens": reply.usage.completion_tokens if reply.usage else None,
                "dimensions": len(vectors.data[0].embedding),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
