"""How the models run: eager torch or OpenVINO, at a precision chosen by measurement."""
