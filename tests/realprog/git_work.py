# git_work.py DIR SCALE [PRELOAD] — git operations on a generated repository.
#
# Builds a repository in DIR/repo: about 150*SCALE commits of generated
# files (edits, additions, removals, renames), a feature branch merged with
# --no-ff, a topic branch with overlapping edits merged with -X theirs, a
# cherry-pick, annotated tags, then `git gc` and a full `git repack -f`, and
# prints what must not depend on the allocator: log --graph --stat, diffs
# with rename detection, blame, grep, shortlog, fsck --full --strict, every
# object's id/type/size and a checksum of all object contents and of
# `git archive`.
# Names, e-mails, dates and time zone are fixed, so every object id is the
# same on every run.
#
# Every git process runs with LD_PRELOAD=PRELOAD (none when empty); this
# driver itself does not (nor does /usr/bin/time, which it runs each git under).  Its own figures go to DIR/git.time as
# "WALL MAXRSS_KB": the wall time spent in git processes and the largest
# peak RSS among them.
import hashlib
import os
import subprocess
import sys
import time

root = os.path.abspath(sys.argv[1])
scale = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
preload = sys.argv[3] if len(sys.argv) > 3 else ""
repo = os.path.join(root, "repo")
os.makedirs(repo)
os.makedirs(os.path.join(root, "home"), exist_ok=True)

env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") and k not in ("LD_PRELOAD",)}
env.update({
    "HOME": os.path.join(root, "home"), "XDG_CONFIG_HOME": os.path.join(root, "home"),
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "Ada Realprog", "GIT_AUTHOR_EMAIL": "ada@example.org",
    "GIT_COMMITTER_NAME": "Cy Committer", "GIT_COMMITTER_EMAIL": "cy@example.org",
    "TZ": "UTC", "LC_ALL": "C", "LANG": "C", "PAGER": "cat", "GIT_PAGER": "cat",
})
git_wall = 0.0
git_rss = [0]
rss_file = os.path.join(root, "git.rss")
clock = [1700000000]
out = sys.stdout


def git(*args, check=True, capture=True, tick=True):
    """Run git in the repository; return stdout (bytes)."""
    global git_wall
    if tick:
        clock[0] += 61
    e = dict(env)
    e["GIT_AUTHOR_DATE"] = "@%d +0000" % clock[0]
    e["GIT_COMMITTER_DATE"] = "@%d +0000" % (clock[0] + 7)
    # /usr/bin/time measures git's peak RSS: this driver's own children
    # figures would count the driver's RSS, which each child has until exec
    cmd = ["/usr/bin/time", "-f", "%M", "-o", rss_file, "env"]
    cmd += ["LD_PRELOAD=" + preload] if preload else ["-u", "LD_PRELOAD"]
    t0 = time.monotonic()
    p = subprocess.run(cmd + ["git"] + list(args), cwd=repo, env=e, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    git_wall += time.monotonic() - t0
    try:
        with open(rss_file) as f:
            git_rss[0] = max(git_rss[0], int(f.read().split()[-1]))
    except (OSError, ValueError, IndexError):
        pass
    if check and p.returncode != 0:
        sys.stderr.write("git_work: git %s failed (%d):\n%s" % (" ".join(args), p.returncode,
                                                                p.stderr.decode(errors="replace")))
        sys.exit(1)
    return p.stdout


def show(title, data):
    out.write("=== %s\n" % title)
    out.write(data.decode(errors="replace"))
    if data and not data.endswith(b"\n"):
        out.write("\n")


state = 0x2545F4914F6CDD1D


def rnd(n):
    global state
    x = state
    x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 7
    x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
    state = x
    return (x >> 11) % n


WORDS = ["alloc", "free", "pool", "slab", "epoch", "arena", "block", "page", "thread", "heap",
         "cache", "list", "node", "ring", "queue", "mark", "sweep", "grow", "trim", "map"]


def line():
    n = 2 + rnd(10)
    return " ".join(WORDS[rnd(len(WORDS))] + str(rnd(100)) for _ in range(n)) + "\n"


files = {}  # path -> list of lines


def write(path):
    full = os.path.join(repo, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.writelines(files[path])


def new_file(prefix):
    path = "%s/d%d/f%04d.txt" % (prefix, rnd(6), rnd(10000))
    if path in files:
        return None
    files[path] = [line() for _ in range(20 + rnd(200))]
    write(path)
    return path


def edit(path):
    ls = files[path]
    for _ in range(1 + rnd(8)):
        k = rnd(3)
        i = rnd(len(ls) + 1)
        if k == 0 or len(ls) < 5:
            ls.insert(i, line())
        elif k == 1:
            del ls[min(i, len(ls) - 1)]
        else:
            ls[min(i, len(ls) - 1)] = line()
    write(path)


def tracked():
    """The model rebuilt from the files of the checked-out branch."""
    model = {}
    for p in git("ls-files", tick=False).decode().split("\n"):
        if p:
            with open(os.path.join(repo, p)) as f:
                model[p] = f.readlines()
    return model


def commit(msg, prefix="src"):
    paths = sorted(p for p in files if p.startswith(prefix + "/"))
    added = False
    for _ in range(1 + rnd(4)):
        r = rnd(20)
        if r == 0 or not paths:
            p = new_file(prefix)
            if p:
                paths.append(p)
                added = True
        elif r == 1 and len(paths) > 10:
            p = paths.pop(rnd(len(paths)))
            git("rm", "-q", "-f", p, tick=False)  # it may have been edited just before
            del files[p]
        elif r == 2 and len(paths) > 10:
            p = paths.pop(rnd(len(paths)))
            q = "%s/moved/%s" % (prefix, os.path.basename(p))
            if q in files:
                continue
            os.makedirs(os.path.join(repo, os.path.dirname(q)), exist_ok=True)
            git("mv", p, q, tick=False)
            files[q] = files.pop(p)
            edit(q)
            paths.append(q)
        else:
            edit(paths[rnd(len(paths))])
    if added:
        git("add", "-A", tick=False)
    git("commit", "-q", "-a", "-m", msg)  # -a: edits; rm and mv are staged already


git("-c", "init.defaultBranch=main", "init", "-q")
for k, v in [("gc.auto", "0"), ("maintenance.auto", "false"), ("core.autocrlf", "false"),
             ("pack.threads", "2"), ("core.fsync", "none"), ("merge.renames", "true")]:
    git("config", k, v, tick=False)

for _ in range(60):
    new_file("src")
files["README"] = ["realprog generated repository\n"]
write("README")
git("add", "-A")
git("commit", "-q", "-m", "initial import")

n_main = int(100 * scale)
for i in range(n_main):
    commit("main change %d" % i)
    if i == n_main // 3:
        git("branch", "feature")
        git("branch", "topic")
        base = git("rev-parse", "HEAD", tick=False).strip().decode()
    if i % 30 == 29:
        git("tag", "-a", "v%d" % (i // 30), "-m", "release %d" % (i // 30))

# feature: its own files only; merged with --no-ff
saved = set(files)
git("checkout", "-q", "feature")
files = tracked()
for _ in range(5):
    new_file("feat")
git("add", "-A", tick=False)
git("commit", "-q", "-m", "feature start")
for i in range(int(25 * scale)):
    commit("feature change %d" % i, prefix="feat")

# topic: edits the same files as main; merged with -X theirs
git("checkout", "-q", "topic")
files = tracked()
topic_paths = sorted(p for p in files if p.startswith("src/") and p in saved)
for i in range(int(12 * scale)):
    p = topic_paths[rnd(len(topic_paths))]
    edit(p)
    git("add", "-A", tick=False)
    git("commit", "-q", "-m", "topic change %d" % i)
pick = git("rev-parse", "HEAD~3", tick=False).strip().decode()

git("checkout", "-q", "main")
git("merge", "-q", "--no-ff", "-m", "merge feature", "feature")
git("merge", "-q", "-X", "theirs", "-m", "merge topic", "topic", check=False)
status = git("status", "--porcelain", tick=False)
if status.strip():
    # a modify/delete conflict -X cannot settle: take the merge as it stands
    git("add", "-A", tick=False)
    git("commit", "-q", "--no-edit")
git("cherry-pick", "-X", "theirs", "--allow-empty", "--keep-redundant-commits", pick, check=False)
if git("status", "--porcelain", tick=False).strip():
    git("cherry-pick", "--abort", check=False, tick=False)

# reload the model from the merged tree; a last round of commits
files = tracked()
for i in range(int(6 * scale)):
    commit("after merge %d" % i)
git("tag", "-a", "final", "-m", "final")

show("log", git("log", "--graph", "--stat", "--format=%H %an %ad %s", "--date=iso", "--all", tick=False))
show("diff rename", git("diff", "-M", "--stat", "--summary", "v0", "final", tick=False))
show("diff patch", git("diff", "-M", "HEAD~8", "HEAD", tick=False))
show("log -p", git("log", "-p", "-n", "40", "--format=%H %s", tick=False))
blame_file = sorted(p for p in files if p.startswith("src/"))[0]
show("blame " + blame_file, git("blame", "-s", blame_file, tick=False))
show("grep", git("grep", "-c", "alloc1", "HEAD", check=False, tick=False))
show("shortlog", git("shortlog", "-sn", "--all", tick=False))
show("describe", git("describe", "--tags", "HEAD~2", check=False, tick=False))
git("gc", "-q", "--prune=now", tick=False)
git("repack", "-q", "-a", "-d", "-f", "--window=20", "--depth=30", tick=False)  # recompute every delta
show("fsck", git("fsck", "--full", "--strict", "--no-dangling", tick=False))
objs = git("cat-file", "--batch-all-objects", "--batch-check", tick=False)
show("objects", objs)
show("object contents sha256",
     hashlib.sha256(git("cat-file", "--batch-all-objects", "--batch", tick=False)).hexdigest().encode())
show("archive sha256",
     hashlib.sha256(git("archive", "--format=tar", "final", tick=False)).hexdigest().encode())
counts = [l for l in git("count-objects", "-v", tick=False).decode().split("\n")
          if l.split(":")[0] in ("count", "in-pack", "packs", "garbage")]
show("count-objects", ("\n".join(counts) + "\n").encode())
show("log after gc", git("log", "--format=%H %s", "--all", "--topo-order", tick=False))

with open(os.path.join(root, "git.time"), "w") as f:
    f.write("%.2f %d\n" % (git_wall, git_rss[0]))
