# preload_alloc.py — an allocation-heavy Python workload for
# preload_compare.sh (run with PYTHONMALLOC=malloc so every object goes
# through malloc): dicts, lists, strings, bytes, big buffers, JSON, sorting
# and threads.  Prints digests that must not depend on the allocator.
# Under LD_PRELOAD it also checks through ctypes that malloc is ftmem's.
import ctypes
import hashlib
import json
import os
import threading

if os.environ.get("LD_PRELOAD"):
    libc = ctypes.CDLL(None)
    try:
        usable = libc.ftm_usable_size
    except AttributeError:
        raise SystemExit("ftm_usable_size not visible: ftmem is not preloaded")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    usable.restype = ctypes.c_size_t
    usable.argtypes = [ctypes.c_void_p]
    p = libc.malloc(1000)
    if usable(p) < 1000:
        raise SystemExit("malloc'd block not ftmem's: ftm_usable_size=%d" % usable(p))
    libc.free(p)


def digest(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


state = 12345


def rnd():
    global state
    state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
    return state >> 33


d = {}
for i in range(60000):
    k = "key%d-%d" % (rnd() % 50000, i % 7)
    d.setdefault(k, []).append(rnd() % 1000)
    if i % 3 == 0:
        d.pop("key%d-%d" % (rnd() % 50000, i % 7), None)
print("dict", len(d), digest(sorted(d.items())[:2000]))

words = ["".join(chr(97 + rnd() % 26) for _ in range(rnd() % 30 + 1)) for _ in range(40000)]
words.sort()
print("sort", digest(words[::97]))

blobs = [bytes([i % 251]) * (rnd() % 200000) for i in range(300)]
total = sum(len(b) for b in blobs)
big = b"".join(blobs)
print("bytes", total, hashlib.sha256(big).hexdigest()[:16])

text = json.dumps({"items": [{"id": i, "name": words[i % len(words)], "v": [i] * (i % 13)} for i in range(20000)]})
back = json.loads(text)
print("json", len(text), digest(back["items"][::101]))

results = [None] * 4


def work(n):
    acc = []
    for i in range(20000):
        acc.append(str(i * n) * (i % 5 + 1))
        if len(acc) > 500:
            acc = acc[250:]
    results[n] = hashlib.sha256("".join(acc).encode()).hexdigest()[:16]


threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("threads", results)
