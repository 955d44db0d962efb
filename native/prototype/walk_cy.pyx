# cython: language_level=3, boundscheck=False, wraparound=False
"""Prototype for the Rust-vs-Cython choice (not shipped): the strict validation walk of one
PrivacyEvent body, hand-specialised to today's schema (the most favourable case for Cython),
returning the body's SHA-256 when it is canonical. See native/prototype/README.md."""
from hashlib import sha256

cdef class Bad(Exception):
    pass

cdef inline long long rlong(const unsigned char* b, Py_ssize_t n, Py_ssize_t* pos) except? -1:
    cdef unsigned long long v = 0
    cdef int shift = 0
    cdef Py_ssize_t start = pos[0]
    cdef unsigned char c
    while True:
        if pos[0] >= n:
            raise Bad("eof")
        c = b[pos[0]]
        pos[0] += 1
        if shift == 63 and c > 1:
            raise Bad("overflow")
        v |= (<unsigned long long>(c & 0x7F)) << shift
        if not (c & 0x80):
            if c == 0 and pos[0] - start > 1:
                raise Bad("non-minimal")
            break
        shift += 7
    return <long long>(v >> 1) ^ -(<long long>(v & 1))

cdef inline int rstr(const unsigned char* b, Py_ssize_t n, Py_ssize_t* pos) except -1:
    cdef long long ln = rlong(b, n, pos)
    if ln < 0 or ln > n - pos[0]:
        raise Bad("length")
    (<bytes>b[pos[0]:pos[0] + ln]).decode("utf-8")
    pos[0] += ln
    return 0

cdef inline int ropt(const unsigned char* b, Py_ssize_t n, Py_ssize_t* pos, int kind) except -1:
    cdef long long i = rlong(b, n, pos)
    if i == 0:
        return 0
    if i != 1:
        raise Bad("union")
    if kind == 0:
        rstr(b, n, pos)
    elif kind == 1:
        rlong(b, n, pos)
    else:
        rbool(b, n, pos)
    return 0

cdef inline int rbool(const unsigned char* b, Py_ssize_t n, Py_ssize_t* pos) except -1:
    if pos[0] >= n or b[pos[0]] > 1:
        raise Bad("bool")
    pos[0] += 1
    return 0

cdef inline int renum(const unsigned char* b, Py_ssize_t n, Py_ssize_t* pos, int k) except -1:
    cdef long long i = rlong(b, n, pos)
    if i < 0 or i >= k:
        raise Bad("enum")
    return 0

def walk(bytes body):
    cdef const unsigned char* b = body
    cdef Py_ssize_t n = len(body)
    cdef Py_ssize_t pos = 0
    cdef long long cnt
    rstr(b, n, &pos); rlong(b, n, &pos); renum(b, n, &pos, 3); rstr(b, n, &pos); rstr(b, n, &pos)
    renum(b, n, &pos, 5); rstr(b, n, &pos); ropt(b, n, &pos, 0)                         # actor
    rstr(b, n, &pos); ropt(b, n, &pos, 1); ropt(b, n, &pos, 2); ropt(b, n, &pos, 0)      # subject
    while True:                                                                          # data_categories
        cnt = rlong(b, n, &pos)
        if cnt == 0:
            break
        if cnt < 0 or cnt > n - pos:
            raise Bad("count")
        for _ in range(cnt):
            rstr(b, n, &pos)
    rstr(b, n, &pos)                                                                     # purpose
    if rlong(b, n, &pos) == 1:                                                           # recipient
        rstr(b, n, &pos); rstr(b, n, &pos); ropt(b, n, &pos, 0); ropt(b, n, &pos, 2)
    renum(b, n, &pos, 4); ropt(b, n, &pos, 0)
    renum(b, n, &pos, 6); ropt(b, n, &pos, 0)                                            # legal_request
    rbool(b, n, &pos); rbool(b, n, &pos); rbool(b, n, &pos); rbool(b, n, &pos)          # consent
    rbool(b, n, &pos); ropt(b, n, &pos, 0); renum(b, n, &pos, 5)                         # transfer
    while True:                                                                          # attributes
        cnt = rlong(b, n, &pos)
        if cnt == 0:
            break
        if cnt < 0 or cnt > n - pos:
            raise Bad("count")
        for _ in range(cnt):
            rstr(b, n, &pos); rstr(b, n, &pos)
    if pos != n:
        raise Bad("trailing")
    return sha256(body).digest()

def walk_batch(list bodies):
    return [walk(x) for x in bodies]
