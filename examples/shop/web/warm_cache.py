"""Post-deploy task: marks the cache warm."""

import kiln_env


def main():
    kiln_env.ready_cache_client().set(kiln_env.WARM_KEY, "1")
    print("cache warmed", flush=True)


if __name__ == "__main__":
    main()
