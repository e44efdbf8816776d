"""A client sending 1 byte per second to a `fracture serve` it starts on 127.0.0.1:
MODE body (a request body, --timeout 3), headers (the request head, --timeout 3) or term
(SIGTERM while a slow upload is in flight, --timeout 60). Prints when the server closed the
connection or exited. Usage: python3 scripts/serve_slow_client.py FRACTURE_BINARY MODEL_FILE
MODE (docs/RELIABILITY.md, issue 31)."""
import socket, subprocess, threading, time, sys, re, signal
binary, model, mode = sys.argv[1], sys.argv[2], sys.argv[3]
t = "3" if mode != "term" else "60"
srv = subprocess.Popen([binary, "serve", "--model", model, "--addr", "127.0.0.1:0", "--timeout", t], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
line = srv.stdout.readline().decode()
host, port = re.search(r"http://([\d.]+):(\d+)", line).groups(); port = int(port)
c = socket.create_connection((host, port)); c.settimeout(0.2)
if mode == "headers":
    c.sendall(b"POST /api/predict HTTP/1.1\r\nX-Slow: ")
else:
    c.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n")
t0 = time.time(); got = b""; closed = None
if mode == "term":
    time.sleep(1); t0 = time.time(); srv.send_signal(signal.SIGTERM)
    while time.time() - t0 < 40:
        try: c.sendall(b"x")
        except OSError: pass
        if srv.poll() is not None: break
        time.sleep(0.2 if time.time() - t0 > 0 else 1)
    print(f"SIGTERM with a 1 byte/s upload in flight: exited after {time.time()-t0:.1f} s" if srv.poll() is not None else "still running after 40 s")
    srv.kill(); sys.exit()
last = 0
while time.time() - t0 < 40:
    if time.time() - last >= 1:
        try: c.sendall(b"a" if mode == "headers" else b"x")
        except OSError: closed = time.time() - t0; break
        last = time.time()
    try:
        d = c.recv(4096)
        if not d: closed = time.time() - t0; break
        got += d
    except socket.timeout: pass
    except OSError: closed = time.time() - t0; break
print(f"{mode}: 1 byte/s with --timeout 3: " + (f"closed after {closed:.1f} s" if closed else "still open after 40 s") + f"; answer {got[:12]!r}")
srv.kill()
