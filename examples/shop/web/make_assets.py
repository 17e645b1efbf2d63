"""Build hook: renders generated/banner.txt from assets/banner.txt.in (deterministic)."""

import hashlib
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    with open(os.path.join(HERE, "assets", "banner.txt.in"), encoding="utf-8") as f:
        template = f.read().strip()
    with open(os.path.join(HERE, "VERSION"), encoding="utf-8") as f:
        version = f.read().strip()
    digest = hashlib.sha256(template.encode()).hexdigest()[:12]
    os.makedirs(os.path.join(HERE, "generated"), exist_ok=True)
    with open(os.path.join(HERE, "generated", "banner.txt"), "w", encoding="utf-8") as f:
        f.write(f"{template.upper()} [{version}, template {digest}]\n")


if __name__ == "__main__":
    main()
