"""The Sparkplug B payload schema (Eclipse Sparkplug 3.0, chapter "Payloads"), built at import.

The message types are described here as a ``FileDescriptorProto`` and turned into Python
classes by the protobuf runtime (``message_factory``): no ``protoc`` step, no generated
``_pb2.py`` to keep in step with the installed protobuf version (generated code refuses a
runtime older than the generator), and the schema stays readable next to the code that uses
it. It is the ``org.eclipse.tahu.protobuf.Payload`` message of the specification (proto2),
field numbers and types as published, so any Sparkplug B edge node's bytes decode with it.
Extensions (``extension_value``, ``extensions N to max``) carry nothing the bridge stores; their
bytes are kept as unknown fields and ignored.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_TYPES = {
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "bool": _F.TYPE_BOOL,
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
}
_PACKAGE = "org.eclipse.tahu.protobuf"

# Datatype codes of Metric.datatype (spec table "Sparkplug B Data Types").
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING = 9, 10, 11, 12
DATETIME, TEXT, UUID, DATASET, BYTES, FILE, TEMPLATE = 13, 14, 15, 16, 17, 18, 19
PROPERTYSET, PROPERTYSETLIST = 20, 21
DATATYPE_NAMES = {
    0: "Unknown",
    1: "Int8",
    2: "Int16",
    3: "Int32",
    4: "Int64",
    5: "UInt8",
    6: "UInt16",
    7: "UInt32",
    8: "UInt64",
    9: "Float",
    10: "Double",
    11: "Boolean",
    12: "String",
    13: "DateTime",
    14: "Text",
    15: "UUID",
    16: "DataSet",
    17: "Bytes",
    18: "File",
    19: "Template",
    20: "PropertySet",
    21: "PropertySetList",
    22: "Int8Array",
    23: "Int16Array",
    24: "Int32Array",
    25: "Int64Array",
    26: "UInt8Array",
    27: "UInt16Array",
    28: "UInt32Array",
    29: "UInt64Array",
    30: "FloatArray",
    31: "DoubleArray",
    32: "BooleanArray",
    33: "StringArray",
    34: "DateTimeArray",
}

# (name, number, type or ".Message", repeated, oneof index or None)
_Field = tuple[str, int, str, bool, int | None]


def _message(
    name: str,
    fields: list[_Field],
    *,
    oneofs: tuple[str, ...] = (),
    nested: tuple[descriptor_pb2.DescriptorProto, ...] = (),
    extensions_from: int | None = None,
) -> descriptor_pb2.DescriptorProto:
    msg = descriptor_pb2.DescriptorProto(name=name)
    for oneof in oneofs:
        msg.oneof_decl.add(name=oneof)
    for fname, number, ftype, repeated, oneof_index in fields:
        field = msg.field.add(name=fname, number=number, label=_REPEATED if repeated else _OPTIONAL)
        if ftype in _TYPES:
            field.type = _TYPES[ftype]
        else:
            field.type = _F.TYPE_MESSAGE
            field.type_name = f".{_PACKAGE}.{ftype}"
        if oneof_index is not None:
            field.oneof_index = oneof_index
    msg.nested_type.extend(nested)
    if extensions_from is not None:
        msg.extension_range.add(start=extensions_from, end=536870912)  # "to max"
    return msg


def _extension_holder(name: str) -> descriptor_pb2.DescriptorProto:
    return _message(name, [], extensions_from=1)


def _value_fields(first: int, extension: str, *, more: tuple[_Field, ...] = ()) -> list[_Field]:
    """The ``oneof value`` members shared by Parameter, DataSetValue and PropertyValue."""
    names = ("int_value", "long_value", "float_value", "double_value")
    types = ("uint32", "uint64", "float", "double")
    fields: list[_Field] = [
        (n, first + i, t, False, 0) for i, (n, t) in enumerate(zip(names, types, strict=True))
    ]
    fields += [
        ("boolean_value", first + 4, "bool", False, 0),
        ("string_value", first + 5, "string", False, 0),
    ]
    fields += list(more)
    fields.append(("extension_value", first + 6 + len(more), extension, False, 0))
    return fields


def _file() -> descriptor_pb2.FileDescriptorProto:
    p = "Payload"
    parameter = _message(
        "Parameter",
        [
            ("name", 1, "string", False, None),
            ("type", 2, "uint32", False, None),
            *_value_fields(3, f"{p}.Template.Parameter.ParameterValueExtension"),
        ],
        oneofs=("value",),
        nested=(_extension_holder("ParameterValueExtension"),),
    )
    template = _message(
        "Template",
        [
            ("version", 1, "string", False, None),
            ("metrics", 2, f"{p}.Metric", True, None),
            ("parameters", 3, f"{p}.Template.Parameter", True, None),
            ("template_ref", 4, "string", False, None),
            ("is_definition", 5, "bool", False, None),
        ],
        nested=(parameter,),
        extensions_from=6,
    )
    dataset_value = _message(
        "DataSetValue",
        _value_fields(1, f"{p}.DataSet.DataSetValue.DataSetValueExtension"),
        oneofs=("value",),
        nested=(_extension_holder("DataSetValueExtension"),),
    )
    row = _message(
        "Row", [("elements", 1, f"{p}.DataSet.DataSetValue", True, None)], extensions_from=2
    )
    dataset = _message(
        "DataSet",
        [
            ("num_of_columns", 1, "uint64", False, None),
            ("columns", 2, "string", True, None),
            ("types", 3, "uint32", True, None),
            ("rows", 4, f"{p}.DataSet.Row", True, None),
        ],
        nested=(dataset_value, row),
        extensions_from=5,
    )
    property_value = _message(
        "PropertyValue",
        [
            ("type", 1, "uint32", False, None),
            ("is_null", 2, "bool", False, None),
            *_value_fields(
                3,
                f"{p}.PropertyValue.PropertyValueExtension",
                more=(
                    ("propertyset_value", 9, f"{p}.PropertySet", False, 0),
                    ("propertysets_value", 10, f"{p}.PropertySetList", False, 0),
                ),
            ),
        ],
        oneofs=("value",),
        nested=(_extension_holder("PropertyValueExtension"),),
    )
    property_set = _message(
        "PropertySet",
        [
            ("keys", 1, "string", True, None),
            ("values", 2, f"{p}.PropertyValue", True, None),
        ],
        extensions_from=3,
    )
    property_set_list = _message(
        "PropertySetList",
        [("propertyset", 1, f"{p}.PropertySet", True, None)],
        extensions_from=2,
    )
    metadata = _message(
        "MetaData",
        [
            ("is_multi_part", 1, "bool", False, None),
            ("content_type", 2, "string", False, None),
            ("size", 3, "uint64", False, None),
            ("seq", 4, "uint64", False, None),
            ("file_name", 5, "string", False, None),
            ("file_type", 6, "string", False, None),
            ("md5", 7, "string", False, None),
            ("description", 8, "string", False, None),
        ],
        extensions_from=9,
    )
    metric = _message(
        "Metric",
        [
            ("name", 1, "string", False, None),
            ("alias", 2, "uint64", False, None),
            ("timestamp", 3, "uint64", False, None),
            ("datatype", 4, "uint32", False, None),
            ("is_historical", 5, "bool", False, None),
            ("is_transient", 6, "bool", False, None),
            ("is_null", 7, "bool", False, None),
            ("metadata", 8, f"{p}.MetaData", False, None),
            ("properties", 9, f"{p}.PropertySet", False, None),
            ("int_value", 10, "uint32", False, 0),
            ("long_value", 11, "uint64", False, 0),
            ("float_value", 12, "float", False, 0),
            ("double_value", 13, "double", False, 0),
            ("boolean_value", 14, "bool", False, 0),
            ("string_value", 15, "string", False, 0),
            ("bytes_value", 16, "bytes", False, 0),
            ("dataset_value", 17, f"{p}.DataSet", False, 0),
            ("template_value", 18, f"{p}.Template", False, 0),
            ("extension_value", 19, f"{p}.Metric.MetricValueExtension", False, 0),
        ],
        oneofs=("value",),
        nested=(_extension_holder("MetricValueExtension"),),
    )
    payload = _message(
        p,
        [
            ("timestamp", 1, "uint64", False, None),
            ("metrics", 2, f"{p}.Metric", True, None),
            ("seq", 3, "uint64", False, None),
            ("uuid", 4, "string", False, None),
            ("body", 5, "bytes", False, None),
        ],
        nested=(
            template,
            dataset,
            property_value,
            property_set,
            property_set_list,
            metadata,
            metric,
        ),
        extensions_from=6,
    )
    return descriptor_pb2.FileDescriptorProto(
        name="sparkplug_b.proto", package=_PACKAGE, syntax="proto2", message_type=[payload]
    )


# A pool of our own: the schema never clashes with another copy in the default pool.
_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file())
Payload: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.Payload"))
