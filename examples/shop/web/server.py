"""shop's web app: counts visits in redis and shows what the build and deploy hooks left."""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import kiln_env

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(HERE, "data")


def read_text(*parts):
    """A file of the app's code, stripped, or a note saying it is missing."""
    try:
        with open(os.path.join(HERE, *parts), encoding="utf-8") as f:
            return f.read().strip()
    except OSError as e:
        return f"(missing: {e.strerror})"


def log_visit(count):
    """Appends the visit to the persistent mount; returns how many visits it holds."""
    try:
        os.makedirs(DATA_DIR, exist_ok=True)
        path = os.path.join(DATA_DIR, "visits.log")
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{count}\n")
        with open(path, encoding="utf-8") as f:
            return str(sum(1 for _ in f))
    except OSError as e:
        return f"not writable ({e.strerror})"


class Handler(BaseHTTPRequestHandler):
    """GET / is the page, GET /healthz answers ok."""

    # Keep-alive: the router reuses its connections instead of opening one per request.
    protocol_version = "HTTP/1.1"
    # A response goes out in one write (flushed after each request), and without waiting for
    # the ACK of the previous segment: kept-alive connections otherwise stall 40 ms a request.
    wbufsize = -1
    disable_nagle_algorithm = True

    def do_GET(self):
        self.skip_body()
        if self.path == "/healthz":
            self.reply(200, "ok\n")
            return
        if self.path != "/":
            self.reply(404, "not found\n")
            return
        status = 200
        try:
            client = kiln_env.cache_client()
            visits = client.incr(kiln_env.VISITS_KEY)
            migration = client.get(kiln_env.MIGRATION_KEY) or "(none)"
            endpoint = kiln_env.cache_endpoint()
            redis_line = f"redis: ok at {endpoint['host']}:{endpoint['port']}, visits={visits}"
        except (LookupError, OSError, kiln_env.redis.RedisError) as e:
            status, visits, migration = 503, 0, "(unknown)"
            redis_line = f"redis: unreachable ({e})"
        lines = [
            f"{os.environ.get('GREETING', 'hi')} from shop {read_text('VERSION')}",
            redis_line,
            f"migration: {migration}",
            f"built: {read_text('generated', 'banner.txt')}",
            f"data: {log_visit(visits)} visits logged in {DATA_DIR}",
        ]
        self.reply(status, "\n".join(lines) + "\n")

    def skip_body(self):
        """Reads past a request body: on a kept-alive connection the next request follows it."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)

    def reply(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        print(f"{self.address_string()} {fmt % args}", flush=True)


class Server(ThreadingHTTPServer):
    """One thread per connection, with a listen backlog that absorbs a burst of them."""

    # The default (5) overflows when many held requests are released at once, and each
    # overflowed connection waits a whole second for its SYN to be retried.
    request_queue_size = 128


def main():
    port = int(os.environ.get("PORT", "8000"))
    server = Server(("0.0.0.0", port), Handler)
    print(f"shop listening on :{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
