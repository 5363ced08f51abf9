"""Files from other people: **a handed file is data, never directions.**

A model, a raster (or a VRT), a results folder or a classes file that ctseg did not write in this run may be
crafted. ctseg reads its data — tensors, pixels, numbers, names — and never follows anything in it that points
elsewhere: no code to import or run, no file to open, no address to contact, no folder to write into. The
network and files outside the input are used only where the user named them on the command line.

One module per kind of file, each the only place that kind is opened:

* :mod:`ctseg.safety.pickles` — ``torch.save`` files: torch's own list of the globals a pickle names
  (nothing of it executed), then ``torch.load(weights_only=True)``;
* :mod:`ctseg.safety.model_spec` — a model file's metadata: an allow-list of keys with checked types and ranges
  (preset, class count, bands, image size, class names, finite statistics); paths, class paths and free keyword
  arguments are refused;
* :mod:`ctseg.safety.rasters` — raster inputs: a VRT is recognised by its bytes whatever its suffix and its
  sources walked before GDAL opens it (no ``/vsi*`` network source, nothing outside the VRT's folder unless
  the user allows it); GDAL's own guards for untrusted VRTs are set for every command. The format sniffing
  (:mod:`ctseg.safety.raster_formats`) and the policy with GDAL's guards (:mod:`ctseg.safety.raster_policy`)
  are modules of their own, their public names re-exported by :mod:`ctseg.safety.rasters`;
* :mod:`ctseg.safety.documents` — JSON and YAML: size and nesting bounds before parsing, YAML without aliases.
* :mod:`ctseg.safety.archives` — release zips read in place, never unpacked: an archive with a ``..``, absolute or
  symbolic-link member or absurd declared sizes is refused before any member is read; a raster member is opened
  from memory with the one driver its bytes name (never a VRT).
* :mod:`ctseg.safety.remote` — rasters by address (``https://``, ``s3://``, ``gs://``, ``az://``) named as inputs:
  opened with the allow-listed raster drivers but VRT, no folder listing or sidecar beside them, GDAL's HTTP options
  only around their reads; :mod:`ctseg.safety.stac` — a STAC item named as an input, within the JSON bounds, and
  its one asset; :mod:`ctseg.safety.aoi` — ``--aoi`` polygons by the file's first bytes.
* :mod:`ctseg.safety.vector_files` — ``ctseg prepare vector``'s labels and extents: one layer of a GeoPackage,
  GeoJSON, Shapefile or FlatGeobuf picked by the first bytes (never an OGR VRT), read through pyogrio;
  :mod:`ctseg.safety.path_lists` — a ``.txt`` list of images, confined to its folder as a VRT's sources are.
"""
