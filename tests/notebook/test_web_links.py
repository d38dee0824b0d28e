"""Web endpoints in a notebook: `with app.run():` shows each endpoint's URL as a link, and the link serves."""

import httpx


def test_app_run_shows_each_endpoint_as_a_link_in_the_cell(kernel, tmp_path):
    done = tmp_path / "done"
    kernel.run(
        f"import os, time\ndone = {str(done)!r}\n"
        "web_app = rc.App('nb-web')\n"
        "@web_app.function(name='hello')\n"
        "@rc.fastapi_endpoint()\n"
        "def hello():\n"
        "    return {'from': 'a notebook'}\n"
    )
    msg_id = kernel.start("with web_app.run():\n    while not os.path.exists(done):\n        time.sleep(0.02)\n")
    try:
        kernel.pump(lambda: any(o["msg_type"] == "display_data" for o in kernel.outputs(msg_id)), 60,
                    "the endpoint's link in the cell")
        link = next(o for o in kernel.outputs(msg_id) if o["msg_type"] == "display_data")["content"]["data"]
        text = link["text/plain"]
        assert text.startswith("hello => http://127.0.0.1:")
        url = text.split(" => ")[1]
        assert f'<a href="{url}" target="_blank">' in link["text/html"]
        assert httpx.get(url, timeout=30).json() == {"from": "a notebook"}  # served while the block runs
    finally:
        done.touch()
        kernel.pump(lambda: kernel.finished(msg_id), 60, "the cell to end")
    assert httpx.get(url, timeout=30).status_code == 404  # the block ended: the app stopped
