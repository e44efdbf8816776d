"""40 parallel 49 MB uploads to a `fracture serve` it starts on 127.0.0.1 (a free port):
prints the statuses and the server's resident memory (idle, peak, 2 s after), from
/proc/<pid>/status. Usage: python3 scripts/serve_load.py FRACTURE_BINARY MODEL_FILE
(docs/RELIABILITY.md, issue 31)."""
import socket, subprocess, threading, time, sys, re
binary, model = sys.argv[1], sys.argv[2]
srv = subprocess.Popen([binary, "serve", "--model", model, "--addr", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
line = srv.stdout.readline().decode()
host, port = re.search(r"http://([\d.]+):(\d+)", line).groups(); port = int(port)
def hwm():
    s = open(f"/proc/{srv.pid}/status").read()
    g = lambda k: int(re.search(k + r":\s+(\d+)", s).group(1)) * 1024
    return g("VmRSS"), g("VmHWM")
time.sleep(1); base = hwm()
body = b"\x89PNG\r\n\x1a\n" + bytes([7]) * (49_000_000 - 8)
statuses = []
def up():
    c = socket.create_connection((host, port)); c.settimeout(120)
    c.sendall(f"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
    def send():
        try:
            mv = memoryview(body)
            for i in range(0, len(body), 1 << 16): c.sendall(mv[i:i + (1 << 16)])
        except OSError: pass
    t = threading.Thread(target=send); t.start()
    raw = b""
    try:
        while True:
            d = c.recv(65536)
            if not d: break
            raw += d
    except OSError: pass
    t.join(); c.close()
    statuses.append(raw[9:12].decode() if raw else "none")
t0 = time.time()
ts = [threading.Thread(target=up) for _ in range(40)]
[t.start() for t in ts]; [t.join() for t in ts]
took = time.time() - t0
time.sleep(2); now, peak = hwm()
print(f"idle RSS {base[0]/1e6:.0f} MB; 40 x 49 MB uploads in {took:.1f} s: {sorted(set(statuses))} {dict((s, statuses.count(s)) for s in set(statuses))}; peak RSS {peak/1e6:.0f} MB; RSS 2 s after {now/1e6:.0f} MB")
srv.terminate(); srv.wait()
