import numpy as np
import pyarrow as pa

from daskcap import schema


def test_model_input_round_trips_exactly():
    planes = np.random.default_rng(0).integers(0, 256, size=(6, 42, 56), dtype=np.uint8)
    packed = schema.pack_frames(planes)
    assert isinstance(packed, bytes)
    assert np.array_equal(schema.unpack_planes(packed, 6, 28, 56), planes)
    rgb = schema.unpack_frames(packed, 6, 28, 56)
    assert rgb.dtype == np.uint8 and rgb.shape == (6, 28, 56, 3)


def test_empty_and_filled_frames_share_dtypes():
    # Dask meta is an empty frame: stage outputs must match it column by column.
    for row_schema in (schema.VIDEO_SCHEMA, schema.CLIP_SCHEMA, schema.WINDOW_SCHEMA):
        empty = schema.empty_frame(row_schema)
        sparse = schema.frame_from_rows([{"status": "ok"}], row_schema)
        assert list(empty.columns) == row_schema.names
        assert dict(empty.dtypes) == dict(sparse.dtypes)


def test_every_row_kind_has_status_and_error():
    for row_schema in (schema.VIDEO_SCHEMA, schema.CLIP_SCHEMA, schema.WINDOW_SCHEMA, schema.WINDOW_OUTPUT_SCHEMA):
        assert row_schema.field("status").type == pa.string()
        assert row_schema.field("error").type == pa.string()


def test_output_table_holds_no_float_tensors():
    for field in schema.WINDOW_OUTPUT_SCHEMA:
        # Lists hold frame indices or flag names, never float tensors.
        assert not pa.types.is_list(field.type) or not pa.types.is_floating(field.type.value_type)
