#!/usr/bin/env python3
"""make_seeds.py — writes the hand-made seed inputs in tests/fuzz/corpus/.

The seeds are committed; this script documents how they were made
(each is a short program in the harness's input language, spelled out
with the operation numbers of the .c file) and rewrites them:

    python3 tests/fuzz/make_seeds.py

Any byte string is a valid input for every harness; the seeds just start
the fuzzer at sequences that reach the interesting paths at once.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# ---- fuzz_alloc.c ---------------------------------------------------------
A_OPS = ["MALLOC", "CALLOC", "REALLOC", "REALLOCARRAY", "ALIGNED", "MEMALIGN", "FREE",
         "FREE_SIZED", "USABLE", "FILL_USABLE", "CHECK", "FAIL", "COLLECT", "THREAD", "BURST"]
A = {name: i for i, name in enumerate(A_OPS)}


def a_op(name, slot):
    return bytes([A[name], slot])  # op byte (slot part 0), then the slot byte


def small(n):
    return bytes([0]) + struct.pack("<H", n)


def medium(n):
    return bytes([4]) + struct.pack("<I", n - 513)


def large(n):
    return bytes([7]) + struct.pack("<I", n - 128 * 1024)


def edge_big(i):
    return bytes([6, i])


def align(shift):
    return bytes([shift])


alloc_seeds = {
    "basic": a_op("MALLOC", 0) + small(24) + a_op("MALLOC", 1) + small(512)
    + a_op("CALLOC", 2) + small(100) + bytes([3]) + a_op("USABLE", 0)
    + a_op("FILL_USABLE", 1) + a_op("CHECK", 0) + bytes([1]) + a_op("FREE", 1)
    + a_op("FREE_SIZED", 0) + a_op("MALLOC", 1) + small(512),
    "realloc": a_op("MALLOC", 3) + small(40) + a_op("REALLOC", 3) + medium(5000)
    + a_op("REALLOC", 3) + large(3 << 20) + a_op("REALLOC", 3) + large(200 * 1024)
    + a_op("REALLOC", 3) + small(8) + a_op("REALLOCARRAY", 4) + medium(20000) + bytes([4])
    + a_op("REALLOCARRAY", 4) + small(0) + bytes([0]) + a_op("REALLOC", 5) + small(0),
    "aligned": a_op("ALIGNED", 6) + align(6) + small(10) + a_op("ALIGNED", 7) + align(12) + medium(9000)
    + a_op("MEMALIGN", 8) + align(16) + small(1) + a_op("MEMALIGN", 9) + align(21) + large(1 << 20)
    + a_op("ALIGNED", 10) + align(17) + small(0) + a_op("CHECK", 0) + bytes([1]),
    "fail": b"".join(a_op("FAIL", 0) + bytes([k, k]) + bytes([3, 1, 0, 9, 2]) for k in range(9))
    + a_op("MALLOC", 0) + small(64) + a_op("FAIL", 0) + bytes([2, 0])
    + a_op("FAIL", 0) + bytes([3, 4, 1, 0, 7]) + a_op("FAIL", 0) + bytes([7, 3]),
    "thread": a_op("MALLOC", 0) + small(48) + a_op("MALLOC", 1) + medium(1000) + a_op("MALLOC", 2)
    + large(300 * 1024) + a_op("THREAD", 0) + bytes([5]) + a_op("FREE", 0) + a_op("FREE", 1)
    + a_op("MALLOC", 11) + small(48) + a_op("MALLOC", 12) + medium(70000) + a_op("REALLOC", 2) + small(7)
    + a_op("FREE", 11) + a_op("COLLECT", 0) + bytes([1]),
    "large": a_op("CALLOC", 0) + edge_big(28) + bytes([1]) + a_op("MALLOC", 1) + edge_big(25)
    + a_op("FREE", 0) + a_op("CALLOC", 2) + edge_big(29) + bytes([2]) + a_op("COLLECT", 0) + bytes([0])
    + a_op("REALLOC", 1) + edge_big(31),
    # a pool of 128 KiB blocks filled, then a thread frees one of them (a remote free to a full pool)
    "full": a_op("BURST", 0) + edge_big(20) + bytes([7]) + a_op("THREAD", 0) + bytes([2])
    + a_op("FREE", 2) + a_op("FREE", 5) + a_op("MALLOC", 2) + edge_big(20),
}

# ---- fuzz_objects.c -------------------------------------------------------
O_OPS = ["NEW", "NEW2", "INCREF", "DECREF", "DECREF2", "STORE", "STORE2", "EXCHANGE", "LOAD", "CLEAR",
         "WR_NEW", "WR_GET", "WR_RELEASE", "IMMORTAL", "SET_DEFERRED", "CLEAR_DEFERRED", "TRY_INCREF",
         "READ_DEATH", "SAFEPOINT", "NEW_OVERFLOW", "THREAD", "CHAIN"]
O = {name: i for i, name in enumerate(O_OPS)}
LEAF, NODE2, NODE4, VAR = 0, 1, 2, 3


def o(name, *args):
    return bytes([O[name]] + list(args))


def new(t, nf=None, init=1):
    """init byte: (b & 3) == 0 -> ftm_field_init of a field (then slot, value bytes)."""
    b = [O["NEW"], t]
    if t == VAR:
        b.append(nf)
    return bytes(b + ([init] if (t != LEAF and (t != VAR or nf)) else []))


def val(k):
    """value byte for a store: k % 5 == 0 is NULL, else held object number k / 5."""
    return 5 * k + 1


objects_seeds = {
    # a -> b -> c, handles of b and c dropped, then a: the chain dies from the top
    "chain": new(NODE2) + new(NODE2) + new(NODE2) + o("STORE", 0, 0, val(1)) + o("STORE", 1, 0, val(2))
    + o("DECREF", 0) + o("SAFEPOINT", 1),
    # a two-object cycle, both handles dropped: leaked until the end breaks it
    "cycle": new(NODE4) + new(NODE4) + o("INCREF", 0) + o("INCREF", 1) + o("STORE", 0, 1, val(1))
    + o("STORE", 1, 2, val(0)) + o("DECREF", 0) + o("DECREF", 0) + o("LOAD", 0, 1),
    # weak references with and without callback, a get, the referent's death, a release
    "weakref": new(LEAF) + o("WR_NEW", 0, 1) + o("WR_NEW", 0, 0) + o("WR_GET", 0) + o("DECREF", 0)
    + o("DECREF", 0) + o("WR_GET", 1) + o("WR_RELEASE", 0) + new(NODE2) + o("WR_NEW", 2, 1)
    + o("WR_RELEASE", 2) + o("DECREF", 2),
    # deferred counting, immortal, try-incref, a death inside a read section
    "modes": new(LEAF) + o("SET_DEFERRED", 0) + o("INCREF", 0) + o("DECREF", 0) + o("DECREF", 0)
    + o("CLEAR_DEFERRED", 0) + new(NODE2) + o("IMMORTAL", 0) + o("DECREF", 0) + new(LEAF)
    + o("TRY_INCREF", 1) + o("TRY_INCREF", 1) + o("READ_DEATH", 1) + o("CLEAR_DEFERRED", 0),
    # the next ops on a short-lived thread (main detached), dropping main's references
    "thread": new(NODE2) + new(NODE4) + new(LEAF) + o("STORE", 0, 0, val(2)) + o("INCREF", 1)
    + o("THREAD", 0x80 | 5) + o("DECREF", 0) + o("DECREF", 0) + o("NEW", LEAF) + o("STORE", 0, 1, val(0))
    + o("DECREF", 0) + o("SAFEPOINT", 0) + o("THREAD", 2) + o("LOAD", 0, 0) + o("DECREF", 0),
    # variable-size objects: fields set, exchanged, loaded, cleared; an overflowing size
    "var": new(VAR, 8, 0) + bytes([3, 0]) + new(VAR, 3) + new(LEAF) + o("STORE", 0, 7, val(1))
    + o("EXCHANGE", 0, 7, val(2)) + o("LOAD", 1, 2) + o("CLEAR", 1, 7) + o("NEW_OVERFLOW", 3),
    # a chain of 90 nodes, then its head dropped: deaths nested past the trashcan depth
    "deep": o("CHAIN", 89) + new(LEAF) + o("STORE", 0, 1, val(1)) + o("DECREF", 0),
}

# ---- fuzz_gc.c ------------------------------------------------------------
G_OPS = ["NEW", "NEW2", "RING", "INCREF", "DECREF", "DECREF2", "STORE", "STORE2", "EXCHANGE", "LOAD",
         "CLEAR", "WR_NEW", "WR_GET", "WR_RELEASE", "UNTRACK", "TRACK", "SET_DEFERRED", "CLEAR_DEFERRED",
         "SAFEPOINT", "COLLECT", "COLLECT2"]
G = {name: i for i, name in enumerate(G_OPS)}
G_NODE, G_FIN, G_VAR, G_BOX, G_LEAF = 0, 1, 2, 3, 4
G_RESURRECT = 0x80  # with G_FIN: the finalizer resurrects its object


def g(name, *args):
    return bytes([G[name]] + list(args))


def gval(k):
    """value byte for a store: k % 7 == 0 is NULL, else held object number k / 7."""
    return 7 * k + 1


def ring(k, fins=False, resurrect_first=False, slot=0, keep=0):
    return g("RING", (k - 1) | (8 if fins else 0) | (16 if resurrect_first else 0) | slot << 5, keep)


gc_seeds = {
    # a -> b -> a, handles dropped: a young collection frees both
    "cycle": g("NEW", G_NODE) + g("NEW", G_NODE) + g("STORE", 0, 0, gval(1)) + g("STORE", 1, 1, gval(0))
    + g("COLLECT", 0),
    # garbage rings promoted through the generations, a held one survives every collection
    "gens": ring(3) + ring(5, keep=1) + g("COLLECT", 1) + ring(2) + g("COLLECT", 0) + g("COLLECT", 0)
    + g("COLLECT", 2) + ring(4) + g("COLLECT", 3),
    # weak references (one with a callback) to a cycle; a box keeps another cycle alive
    "weakref": ring(3, keep=1) + g("WR_NEW", 0, 1) + g("WR_NEW", 0, 0) + g("DECREF", 0) + g("COLLECT", 2)
    + g("WR_GET", 0) + g("NEW", G_BOX) + ring(2, keep=1) + g("STORE", 0, 0, gval(1)) + g("COLLECT", 2)
    + g("CLEAR", 0, 0) + g("COLLECT", 2),
    # finalizers: one resurrects its cycle, then the cycle dies for good
    "finalize": ring(4, fins=True, resurrect_first=True) + g("COLLECT", 2) + g("DECREF", 0) + g("COLLECT", 2)
    + g("NEW", G_FIN | G_RESURRECT) + g("DECREF", 0) + g("DECREF", 0),
    # untracked and deferred objects are roots; re-tracking makes the cycle collectable
    "roots": ring(3, keep=1) + g("UNTRACK", 0) + g("DECREF", 0) + g("COLLECT", 2) + g("TRACK", 0)
    + g("COLLECT", 0) + ring(2, keep=1) + g("SET_DEFERRED", 0) + g("DECREF", 0) + g("COLLECT", 2)
    + g("CLEAR_DEFERRED", 0) + g("COLLECT", 2),
    # variable-size nodes, exchange and load, a cycle through an untracked box (never collected)
    "mixed": g("NEW", G_VAR, 5) + g("NEW", G_VAR, 2) + g("NEW", G_BOX) + g("STORE", 0, 4, gval(1))
    + g("STORE", 1, 1, gval(2)) + g("STORE", 2, 0, gval(0)) + g("INCREF", 2) + g("EXCHANGE", 0, 1, gval(0))
    + g("LOAD", 0, 4) + g("COLLECT", 1) + g("DECREF", 0) + g("DECREF", 0) + g("COLLECT", 2)
    + g("SAFEPOINT", 0),
}

# ---- fuzz_intern.c --------------------------------------------------------
intern_seeds = {
    "basic": b"hello\nworld\nhello\n?hello\n?nope\n\n\n#\n",
    "tables": b">\x05\nabc\nabd\n>\x02\nabc\n*\x20key\n#\n!\nabc\n#\n",
    # hash modes: table (c % 4), mode (c / 4) % 5: 8 = table 0 constant,
    # 5 = table 1 low 4 bits, 14 = table 2 length, 19 = table 3 top 16 bits
    "collide": b">\x08\n*\x30k\n>\x05\n*\x30k\n>\x0e\nab\ncd\nab\n>\x13\n*\x10x\n#\n",
    "foreign": b"x\n@x\n@y\n?y\n#\n",
    "concurrent": b"&\x07\na\nb\nc\na\nd\ne\nf\n#\n&\x03\na\nz\nq\n#\n",
}


def write(fuzzer, seeds):
    d = os.path.join(HERE, "corpus", fuzzer)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    write("fuzz_alloc", alloc_seeds)
    write("fuzz_objects", objects_seeds)
    write("fuzz_intern", intern_seeds)
    write("fuzz_gc", gc_seeds)
