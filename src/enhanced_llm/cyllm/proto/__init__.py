"""CY-LLM's gRPC ``AIService`` (``ai_service.proto``, written from seed 001's field tables) and its generated code.

``ai_service_pb2*.py`` are generated and checked in; after changing the ``.proto``,
regenerate them from the repository root with (``grpcio-tools``, in the ``all`` extra)::

    python -m grpc_tools.protoc -I src --python_out=src --pyi_out=src --grpc_python_out=src \\
        src/enhanced_llm/cyllm/proto/ai_service.proto

The generated modules need ``grpcio`` and ``protobuf`` at least as new as the tools
that wrote them (``grpcio>=1.85.1``, ``protobuf>=7.35.1``; ``tests/test_cyllm_gateway.py``
checks the checked-in files match a fresh generation).
"""
