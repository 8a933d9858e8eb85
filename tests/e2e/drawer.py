"""A client process for the end-to-end tests: draws money over HTTP, reports counts.

Usage: python drawer.py BASE_URL[,BASE_URL...] USER_ID TOKEN COUNT AMOUNT [KEY_PREFIX]

With KEY_PREFIX, the n-th request carries Idempotency-Key KEY_PREFIX<n>.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request


def draw(base_url: str, user_id: str, token: str, amount: str, key: str) -> str:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    if key:
        headers["Idempotency-Key"] = key
    request = urllib.request.Request(  # noqa: S310 - the test's own server
        f"{base_url}/users/{user_id}/draw_money",
        data=json.dumps({"amount": amount, "destination": "e2e"}).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return str(response.status)
    except urllib.error.HTTPError as error:
        return f"{error.code} {json.loads(error.read())['error']['code']}"


def main() -> None:
    urls, (user_id, token, count, amount) = sys.argv[1].split(","), sys.argv[2:6]
    prefix = sys.argv[6] if len(sys.argv) > 6 else ""
    outcomes = [
        draw(
            urls[n % len(urls)],
            user_id,
            token,
            amount,
            f"{prefix}{n}" if prefix else "",
        )
        for n in range(int(count))
    ]
    print(json.dumps({outcome: outcomes.count(outcome) for outcome in set(outcomes)}))


if __name__ == "__main__":
    main()
