"""A real PACS: an Orthanc started by the test on 127.0.0.1 (its own ports, database and
configuration in a temporary folder). The source series is stored, then two translated series
go in, one by C-STORE (pynetdicom) and one by STOW-RS (Orthanc's DICOMweb plugin); both must land
in the source's patient and study, and Orthanc's ordered-slices view must give their slice count
and positions. Skipped, with the package to install, where Orthanc or its plugin is missing."""

import json
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medgan_tf import config as config_lib
from medgan_tf import presets
from medgan_tf.serving import loading, signatures
from medgan_tf.serving.translation import translate_file

from dicom_tools import scanner_series
from helpers import SIZE, oblique_affine

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
INSTALL = "apt-get install orthanc orthanc-dicomweb (Debian; `make test` installs them where apt-get works)"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Orthanc:
    """An Orthanc server of this test only: `url` for REST and DICOMweb, `dicom_port` for C-STORE."""

    def __init__(self, folder: Path):
        binary = shutil.which("Orthanc")
        if binary is None or not PLUGIN.exists():
            pytest.skip(f"Orthanc with its DICOMweb plugin is not installed: {INSTALL}")
        self.http_port, self.dicom_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        settings = {
            "Name": "medgan-tf-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True, "Plugins": [str(PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        (folder / "orthanc.json").write_text(json.dumps(settings))
        self.log = open(folder / "orthanc.log", "w")
        self.process = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.get("/system")
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"Orthanc did not start: {(folder / 'orthanc.log').read_text()[-2000:]}")
                time.sleep(0.2)

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str, body: bytes, content_type: str):
        request = urllib.request.Request(self.url + path, data=body, headers={"Content-Type": content_type,
                                                                               "Accept": "application/dicom+json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def orthanc(tmp_path):
    server = Orthanc(tmp_path)
    yield server
    server.stop()


def c_store(files: list[Path], port: int) -> list[int]:
    """Send `files` to 127.0.0.1:`port` by C-STORE; the status of each."""
    pynetdicom = pytest.importorskip("pynetdicom", reason="pynetdicom is not installed (pip install -r requirements-test.txt)")
    datasets = [pydicom.dcmread(str(file)) for file in files]
    entity = pynetdicom.AE(ae_title="MEDGAN")
    for sop_class in {ds.SOPClassUID for ds in datasets}:
        entity.add_requested_context(sop_class, pydicom.uid.ExplicitVRLittleEndian)
    association = entity.associate("127.0.0.1", port, ae_title="ORTHANC")
    assert association.is_established, "Orthanc refused the association"
    try:
        return [int(association.send_c_store(ds).Status) for ds in datasets]
    finally:
        association.release()


def stow_rs(files: list[Path], orthanc: Orthanc) -> dict:
    """Send `files` in one STOW-RS request (multipart/related, application/dicom)."""
    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + file.read_bytes() + b"\r\n"
                    for file in files) + f"--{boundary}--\r\n".encode()
    status, answer = orthanc.post("/dicom-web/studies", body,
                                  f'multipart/related; type="application/dicom"; boundary={boundary}')
    assert status == 200, answer
    return answer


def identity_model(task: str) -> loading.RunModel:
    experiment = config_lib.override(presets.task_preset(task), {"data.image_size": SIZE})
    return loading.RunModel(Path(f"identity-{task}"), experiment, signatures.normalization_description(experiment),
                            lambda images, training: images)


def test_outputs_land_in_the_source_study_by_c_store_and_stow_rs(orthanc, tmp_path):
    source = scanner_series(tmp_path / "pet", "PT", oblique_affine((2.0, 2.2, 3.0)), shape=(24, 20, 5))
    for file in sorted(source.iterdir()):
        orthanc.post("/instances", file.read_bytes(), "application/dicom")
    model = identity_model("pet_ct")
    outputs = {}
    for route in ("c-store", "stow-rs"):
        folder = tmp_path / f"ct_{route}"
        translate_file(model, source, folder, quiet=True, output_format="dicom")
        outputs[route] = sorted(folder.iterdir())
    assert set(c_store(outputs["c-store"], orthanc.dicom_port)) == {0x0000}
    assert "FailedSOPSequence" not in json.dumps(stow_rs(outputs["stow-rs"], orthanc))

    header = pydicom.dcmread(str(next(source.iterdir())), stop_before_pixels=True)
    (patient,) = orthanc.get("/patients")  # one patient: the outputs joined the source's
    (study,) = orthanc.get(f"/patients/{patient}/studies")
    assert study["MainDicomTags"]["StudyInstanceUID"] == header.StudyInstanceUID
    by_uid = {orthanc.get(f"/series/{s}")["MainDicomTags"]["SeriesInstanceUID"]: s for s in study["Series"]}
    assert header.SeriesInstanceUID in by_uid and len(by_uid) == 3
    for route, files in outputs.items():
        written = [pydicom.dcmread(str(file), stop_before_pixels=True) for file in files]
        series_id = by_uid[written[0].SeriesInstanceUID]
        ordered = orthanc.get(f"/series/{series_id}/ordered-slices")
        assert ordered["Type"] == "Volume" and len(ordered["Dicom"]) == len(files) == 5, (route, ordered)
        positions = []
        for path in ordered["Dicom"]:  # "/instances/<id>/file", in Orthanc's slice order
            tags = orthanc.get(path.rsplit("/", 1)[0] + "/simplified-tags")
            positions.append([float(v) for v in tags["ImagePositionPatient"].split("\\")])
        ours = {tuple(np.round([float(v) for v in ds.ImagePositionPatient], 3)) for ds in written}
        assert {tuple(np.round(p, 3)) for p in positions} == ours, route
        steps = np.diff(np.array(positions), axis=0)  # in order: one step, the slice spacing
        assert np.allclose(steps, steps[0], atol=1e-3) and np.linalg.norm(steps[0]) == pytest.approx(3.0, abs=1e-3)
