"""How long after an edit do `tnx lsp`'s diagnostics arrive? (issue 16: within 100 ms)

Starts the real server (`python -m tunix_dsl lsp`) as a subprocess, opens
examples/quickstart.tnx and sends 50 edits, each a one-character change that
alternately breaks a field name (`beta` → `betx`, TNX101) and fixes it. The
latency of an edit is the wall time from writing its `didChange` to reading
the `publishDiagnostics` for that document version; edits are spaced so that
the debounce never merges two of them. Printed beside it: the server's
debounce and what one parse + check of the file costs in this process, so
the remainder is transport and scheduling.

    python bench/lsp_latency.py [--edits 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from queue import Queue

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "quickstart.tnx"


class Client:
    """A minimal LSP client: Content-Length framed JSON-RPC over the server's pipes."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tunix_dsl", "lsp"], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.messages: Queue[tuple[float, dict]] = Queue()
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stream = self.proc.stdout
        while True:
            length = 0
            while (line := stream.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if not line:
                return
            body = json.loads(stream.read(length))
            self.messages.put((time.perf_counter(), body))

    def send(self, method: str, params: dict, request: bool = False) -> float:
        message = {"jsonrpc": "2.0", "method": method, "params": params}
        if request:
            self.next_id += 1
            message["id"] = self.next_id
        data = json.dumps(message).encode()
        sent = time.perf_counter()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
        self.proc.stdin.flush()
        return sent

    def wait(self, predicate) -> tuple[float, dict]:
        while True:
            at, message = self.messages.get(timeout=30)
            if predicate(message):
                return at, message

    def close(self) -> None:
        self.send("shutdown", {}, request=True)
        self.wait(lambda m: m.get("id") == self.next_id)
        self.send("exit", {})
        self.proc.wait(timeout=10)


def _diagnostics_for(uri: str, version: int):
    def match(message: dict) -> bool:
        params = message.get("params") or {}
        return (message.get("method") == "textDocument/publishDiagnostics"
                and params.get("uri") == uri and params.get("version") == version)
    return match


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=50)
    args = parser.parse_args()

    from tunix_dsl.api import parse
    from tunix_dsl.lsp.server import DEBOUNCE_S

    text = EXAMPLE.read_text(encoding="utf-8")
    line_no = text[:text.index("  beta ")].count("\n")
    column = len("  bet")
    uri = EXAMPLE.as_uri()

    spawned = time.perf_counter()
    client = Client()
    client.send("initialize", {"processId": None, "rootUri": ROOT.as_uri(), "capabilities": {}},
                request=True)
    initialized, _ = client.wait(lambda m: m.get("id") == 1)
    client.send("initialized", {})
    opened = client.send("textDocument/didOpen", {"textDocument": {
        "uri": uri, "languageId": "tnx", "version": 1, "text": text}})
    first, _ = client.wait(_diagnostics_for(uri, 1))

    latencies, counts = [], []
    for version in range(2, args.edits + 2):
        letter = "x" if version % 2 == 0 else "a"  # betx (TNX101) / beta (clean)
        change = {"range": {"start": {"line": line_no, "character": column},
                            "end": {"line": line_no, "character": column + 1}}, "text": letter}
        sent = client.send("textDocument/didChange", {
            "textDocument": {"uri": uri, "version": version}, "contentChanges": [change]})
        arrived, message = client.wait(_diagnostics_for(uri, version))
        latencies.append((arrived - sent) * 1000)
        counts.append(len(message["params"]["diagnostics"]))
        time.sleep(DEBOUNCE_S * 3)  # the next edit must not fall into this one's debounce
    client.close()
    assert counts[0::2] == [1] * len(counts[0::2]) and not any(counts[1::2]), counts

    checks = []
    for _ in range(50):
        start = time.perf_counter()
        parse(text, str(EXAMPLE))
        checks.append((time.perf_counter() - start) * 1000)

    median = statistics.median(latencies)
    p90 = sorted(latencies)[int(0.9 * (len(latencies) - 1))]
    print(f"edits of {EXAMPLE.relative_to(ROOT)}: {len(latencies)} "
          f"(alternately 1 and 0 diagnostics, as expected)")
    print("| measure | ms |")
    print("|---|---:|")
    print(f"| edit → diagnostics, median | {median:.1f} |")
    print(f"| edit → diagnostics, p90 | {p90:.1f} |")
    print(f"| edit → diagnostics, max | {max(latencies):.1f} |")
    print(f"| server debounce (`DEBOUNCE_S`) | {DEBOUNCE_S * 1000:.0f} |")
    print(f"| start → initialize answered | {(initialized - spawned) * 1000:.0f} |")
    print(f"| open → first diagnostics (parser and validators built on `initialized`) | "
          f"{(first - opened) * 1000:.0f} |")
    print(f"| one parse + check in-process, median | {statistics.median(checks):.1f} |")
    print(f"\nwithin 100 ms: {'yes' if median <= 100 else 'NO'} (median)")


if __name__ == "__main__":
    main()
