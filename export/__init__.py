"""ONNX export and the onnxruntime side (installed as ``zoo.export``).

``zoo.export.onnx`` turns a trained model into one self-contained .onnx file (needs torch);
``zoo.export.runtime`` loads it with onnxruntime and numpy alone, after ``zoo.export.protobuf``
(the standard library alone) has checked its bytes.
"""
