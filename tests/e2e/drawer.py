"""A client process for the end-to-end tests: draws money over HTTP, reports counts.

Usage: python drawer.py BASE_URL[,BASE_URL...] USER_ID COUNT AMOUNT
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request


def draw(base_url: str, user_id: str, amount: str) -> str:
    request = urllib.request.Request(  # noqa: S310 - the test's own server
        f"{base_url}/users/{user_id}/draw_money",
        data=json.dumps({"amount": amount, "destination": "e2e"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return str(response.status)
    except urllib.error.HTTPError as error:
        return f"{error.code} {json.loads(error.read())['error']['code']}"


def main() -> None:
    urls, user_id, count, amount = sys.argv[1].split(","), *sys.argv[2:5]
    outcomes = [draw(urls[n % len(urls)], user_id, amount) for n in range(int(count))]
    print(json.dumps({outcome: outcomes.count(outcome) for outcome in set(outcomes)}))


if __name__ == "__main__":
    main()
