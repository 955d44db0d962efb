"""A C2SP tlog-witness for auditor's checkpoints, meant to run under another party's control.

    auditor.witness.core     the add-checkpoint decision (pure): 404/403/400/409/422/200
    auditor.witness.state    the latest cosigned checkpoint per origin, persisted atomically
    auditor.witness.server   the HTTP endpoint (stdlib ThreadingHTTPServer)
    auditor.witness.client   the log side: send a checkpoint, get verified cosignatures back
    auditor.witness.keys     the witness's Ed25519 key and its cosignature vkey
"""
