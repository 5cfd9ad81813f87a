"""Start the simulator: patch moto, then serve moto's app wrapped in the accounting middleware."""
from __future__ import annotations

import os
import threading

from . import state

_APPLIED = threading.Lock()
_DONE: list[bool] = []


def apply_patches() -> None:
    """Patch moto once per process, before any request is served."""
    with _APPLIED:
        if _DONE:
            return
        # Stock AMIs cost seconds per new account/region backend and pollute DescribeSnapshots; tools use their own.
        os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        from . import ec2, images, ssm  # pylint: disable=import-outside-toplevel
        ec2.apply()
        images.apply()
        ssm.apply()
        from . import autoscaling, elbv2  # pylint: disable=import-outside-toplevel
        elbv2.apply()
        autoscaling.apply()
        from . import cloudwatch  # pylint: disable=import-outside-toplevel
        cloudwatch.apply()
        _DONE.append(True)


class Handle:
    def __init__(self, server, host: str, port: int) -> None:
        self._server = server
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.stop()


def make_server_class():
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer  # pylint: disable=import-outside-toplevel
    from moto.moto_server.werkzeug_app import (  # pylint: disable=import-outside-toplevel
        DomainDispatcherApplication, create_backend_app, MotoRequestHandler)
    from werkzeug.serving import make_server  # pylint: disable=import-outside-toplevel

    from .middleware import SimMiddleware  # pylint: disable=import-outside-toplevel

    class SimServer(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = SimMiddleware(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(self._ip_address, self._port, app, True, request_handler=_Quiet)
            self._server_ready_event.set()
            self._server.serve_forever()

    class _Quiet(MotoRequestHandler):
        def log_request(self, *args, **kwargs) -> None:  # one line per request would drown test output
            if os.environ.get("SIM_VERBOSE"):
                super().log_request(*args, **kwargs)

    return SimServer


def start(host: str = "127.0.0.1", port: int = 0, config: dict | None = None) -> Handle:
    apply_patches()
    if config:
        state.ACCOUNTING.set_config(config)
    server = make_server_class()(ip_address=host, port=port, verbose=False)
    server.start()
    bound_host, bound_port = server.get_host_and_port()
    return Handle(server, bound_host, bound_port)
