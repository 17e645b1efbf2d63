"""Deploy hook: records in redis that this version's migration ran."""

import os

import kiln_env

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    with open(os.path.join(HERE, "VERSION"), encoding="utf-8") as f:
        version = f.read().strip()
    client = kiln_env.ready_cache_client()
    client.set(kiln_env.MIGRATION_KEY, f"applied for {version}")
    print(f"migration marker written for {version}", flush=True)


if __name__ == "__main__":
    main()
