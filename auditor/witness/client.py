"""Send checkpoints to witnesses and collect their cosignatures (the log side of tlog-witness).

:class:`WitnessClient` speaks to one witness. It remembers the size the witness last cosigned
for each origin; when it does not know it (or is wrong) the witness answers 409 with its size,
and the client asks ``proof_from(old_size)`` for a consistency proof from there and retries
once. The cosignature lines that come back are checked with the witness's public key before
they are kept: an unverifiable answer is an error, never a cosignature.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import socket
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable, Sequence

from auditor.errors import AuditorError, TrailCorruption
from auditor.trail.note import CosignatureVerifier, Note, Signature, verified_signatures

ProofFrom = Callable[[int], Sequence[bytes]]
#: the longest answer read from a witness: cosignature lines (or a 409's size) are a few hundred bytes
MAX_ANSWER = 64 * 1024


class WitnessError(AuditorError):
    """A witness refused a checkpoint or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def request_body(old_size: int, proof: Sequence[bytes], note: bytes) -> bytes:
    lines = [f"old {old_size}".encode()] + [base64.b64encode(h) for h in proof]
    return b"\n".join(lines) + b"\n\n" + note


@dataclass
class WitnessClient:
    url: str                       # the submission prefix, e.g. http://witness.example:7380
    verifier: CosignatureVerifier  # the witness's public key
    timeout: float = 10.0
    known: dict[str, int] = field(default_factory=dict)  # origin -> size the witness last cosigned

    def _post(self, body: bytes) -> tuple[int, bytes]:
        """One exchange, bounded as a whole: ``timeout`` seconds from connecting to the last byte (a
        witness trickling its answer cannot hold the caller), at most :data:`MAX_ANSWER` bytes read
        (an endless answer cannot fill memory), and an answer that is not HTTP is an error of this
        witness (http.client raises HTTPException, not OSError, for it)."""
        u = urllib.parse.urlsplit(self.url)
        conn_cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(u.hostname or "localhost", u.port, timeout=self.timeout)
        late = threading.Event()

        def hang_up() -> None:
            late.set()
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)   # wakes the blocked read; close() stays with the caller

        timer = threading.Timer(self.timeout, hang_up)
        timer.daemon = True
        timer.start()
        try:
            conn.request("POST", u.path.rstrip("/") + "/add-checkpoint", body=body,
                         headers={"Content-Type": "text/plain"})
            resp = conn.getresponse()
            answer = resp.read(MAX_ANSWER + 1)
        except (OSError, http.client.HTTPException) as exc:
            if late.is_set():
                raise WitnessError(f"witness {self.url} unreachable: no complete answer within {self.timeout:g}s") \
                    from exc
            if isinstance(exc, OSError):
                raise WitnessError(f"witness {self.url} unreachable: {exc}") from exc
            raise WitnessError(f"witness {self.url} answered with something that is not HTTP "
                               f"({type(exc).__name__})") from exc
        finally:
            timer.cancel()
            conn.close()
        if late.is_set():
            raise WitnessError(f"witness {self.url} unreachable: no complete answer within {self.timeout:g}s")
        if len(answer) > MAX_ANSWER:
            raise WitnessError(f"witness {self.url} answered with more than {MAX_ANSWER} bytes", resp.status)
        return resp.status, answer

    def cosign(self, note: bytes, origin: str, size: int, proof_from: ProofFrom) -> list[Signature]:
        """The witness's verified cosignatures on ``note`` (raises WitnessError on refusal)."""
        old = self.known.get(origin, 0)
        for attempt in range(2):
            proof = list(proof_from(old)) if old else []
            status, body = self._post(request_body(old, proof, note))
            if status == 409 and attempt == 0 and body.strip().isdigit():
                old = int(body.strip())
                if old > size:
                    raise WitnessError(f"witness {self.url} has cosigned {origin} at size {old}, beyond {size}: "
                                       "the log was rolled back", status)
                continue
            if status != 200:
                raise WitnessError(f"witness {self.url} refused {origin} size {size}: {status} "
                                   f"{body.decode('utf-8', 'replace').strip()[:200]}", status)
            try:
                parsed = Note.parse(note)
                lines = body.decode()
                extra = Note.parse(parsed.text + "\n" + lines).signatures
                good = verified_signatures(Note(parsed.text, extra), [self.verifier])
            except (TrailCorruption, UnicodeDecodeError) as exc:
                raise WitnessError(f"witness {self.url} answered with an invalid cosignature: {exc}") from exc
            if not good:
                raise WitnessError(f"witness {self.url} answered without a cosignature of its key "
                                   f"{self.verifier.name}")
            self.known[origin] = size
            return [sig for _, sig in good]
        raise WitnessError(f"witness {self.url} kept answering 409 for {origin}")
