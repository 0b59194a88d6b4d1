"""Inclusive and self shares of a py-spy raw profile: summarise_profile.py OUT.txt [N]."""
import sys, collections
incl = collections.Counter(); self_ = collections.Counter(); total = 0
for line in open(sys.argv[1]):
    line = line.rstrip()
    if not line: continue
    stack, _, n = line.rpartition(" ")
    n = int(n); total += n
    frames = stack.split(";")
    seen = set()
    for f in frames:
        name = f.split(" (")[0] + " " + (f.split("/")[-1].split(":")[0] if "/" in f else "")
        if name not in seen:
            incl[name] += n; seen.add(name)
    last = frames[-1]; self_[last.split(" (")[0] + " " + (last.split("/")[-1] if "/" in last else "")] += n
print("total samples", total)
print("--- inclusive")
for k, v in incl.most_common(int(sys.argv[2]) if len(sys.argv) > 2 else 30): print(f"{100*v/total:5.1f}% {k}")
print("--- self")
for k, v in self_.most_common(25): print(f"{100*v/total:5.1f}% {k}")
