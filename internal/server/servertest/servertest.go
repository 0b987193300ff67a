// Package servertest provides a dynamic test gRPC service whose descriptor carries allowed_roles and buf.validate rules, so the server chain can be tested before any service proto exists.
package servertest

import (
	"context"
	"errors"
	"io"
	"sync"

	_ "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate" // buf.validate options in the descriptor
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	_ "github.com/condaccess/condaccess/gen/go/condaccess/common/v1" // allowed_roles option
)

// ServiceName is the full name of the test service.
const ServiceName = "condaccess.servertest.v1.TestService"

// Full method names of the test service.
const (
	// MethodEcho echoes device_id; allowed to ROLE_READER.
	MethodEcho = "/" + ServiceName + "/Echo"
	// MethodAdmin echoes device_id; allowed to ROLE_SECOPS_ADMIN and ROLE_POLICY_ADMIN.
	MethodAdmin = "/" + ServiceName + "/Admin"
	// MethodInternal echoes device_id; no allowed_roles, allowed_services "risk": the
	// risk service's identity only.
	MethodInternal = "/" + ServiceName + "/Internal"
	// MethodPanic panics; allowed to ROLE_READER.
	MethodPanic = "/" + ServiceName + "/Panic"
	// MethodStream echoes every request of a bidirectional stream; allowed to ROLE_READER.
	MethodStream = "/" + ServiceName + "/Stream"
	// MethodWatch echoes its request once, then holds the server stream open until the
	// client leaves; allowed to ROLE_READER. It stands for the services' Watch… RPCs.
	MethodWatch = "/" + ServiceName + "/Watch"
	// MethodUpload takes an UploadRequest (a payload without a size cap, so that only
	// the server's limits bound it) and, when hold is set, returns only when its
	// caller leaves; allowed to ROLE_READER. It stands for a slow call with a large
	// request.
	MethodUpload = "/" + ServiceName + "/Upload"
)

const fileText = `
name: "condaccess/servertest/v1/servertest.proto"
package: "condaccess.servertest.v1"
dependency: "buf/validate/validate.proto"
dependency: "condaccess/common/v1/common.proto"
syntax: "proto3"
message_type {
  name: "Alert"
  field { name: "alert_id" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL json_name: "alertId"
    options { [buf.validate.field] { string { uuid: true } } } }
}
message_type {
  name: "EchoRequest"
  field { name: "device_id" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL json_name: "deviceId"
    options { [buf.validate.field] { string { min_len: 1 max_len: 64 } } } }
  field { name: "alert" number: 2 type: TYPE_MESSAGE label: LABEL_OPTIONAL type_name: ".condaccess.servertest.v1.Alert" json_name: "alert" }
}
message_type {
  name: "UploadRequest"
  field { name: "payload" number: 1 type: TYPE_BYTES label: LABEL_OPTIONAL json_name: "payload" }
  field { name: "hold" number: 2 type: TYPE_BOOL label: LABEL_OPTIONAL json_name: "hold" }
}
message_type {
  name: "EchoResponse"
  field { name: "device_id" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL json_name: "deviceId" }
}
service {
  name: "TestService"
  method { name: "Echo" input_type: ".condaccess.servertest.v1.EchoRequest" output_type: ".condaccess.servertest.v1.EchoResponse"
    options { [condaccess.common.v1.allowed_roles]: [ROLE_READER] } }
  method { name: "Admin" input_type: ".condaccess.servertest.v1.EchoRequest" output_type: ".condaccess.servertest.v1.EchoResponse"
    options { [condaccess.common.v1.allowed_roles]: [ROLE_SECOPS_ADMIN, ROLE_POLICY_ADMIN] } }
  method { name: "Internal" input_type: ".condaccess.servertest.v1.EchoRequest" output_type: ".condaccess.servertest.v1.EchoResponse"
    options { [condaccess.common.v1.allowed_services]: ["risk"] } }
  method { name: "Panic" input_type: ".condaccess.servertest.v1.EchoRequest" output_type: ".condaccess.servertest.v1.EchoResponse"
    options { [condaccess.common.v1.allowed_roles]: [ROLE_READER] } }
  method { name: "Upload" input_type: ".condaccess.servertest.v1.UploadRequest" output_type: ".condaccess.servertest.v1.EchoResponse"
    options { [condaccess.common.v1.allowed_roles]: [ROLE_READER] } }
  method { name: "Stream" input_type: ".condaccess.servertest.v1.EchoRequest" output_type: ".condaccess.servertest.v1.EchoResponse"
    client_streaming: true server_streaming: true
    options { [condaccess.common.v1.allowed_roles]: [ROLE_READER] } }
  method { name: "Watch" input_type: ".condaccess.servertest.v1.EchoRequest" output_type: ".condaccess.servertest.v1.EchoResponse"
    server_streaming: true
    options { [condaccess.common.v1.allowed_roles]: [ROLE_READER] } }
}
`

var (
	once    sync.Once
	file    protoreflect.FileDescriptor
	fileErr error
)

// File returns the test service's file descriptor, registering it in
// protoregistry.GlobalFiles on first use (so the auth lookup and reflection see it).
func File() protoreflect.FileDescriptor {
	once.Do(func() {
		var fdp descriptorpb.FileDescriptorProto
		if fileErr = prototext.Unmarshal([]byte(fileText), &fdp); fileErr != nil {
			return
		}
		if file, fileErr = protodesc.NewFile(&fdp, protoregistry.GlobalFiles); fileErr != nil {
			return
		}
		fileErr = protoregistry.GlobalFiles.RegisterFile(file)
	})
	if fileErr != nil {
		panic("servertest: " + fileErr.Error())
	}
	return file
}

func msg(name protoreflect.Name) *dynamicpb.Message {
	return dynamicpb.NewMessage(File().Messages().ByName(name))
}

// NewRequest returns an EchoRequest; alertID is set only when non-empty.
func NewRequest(deviceID, alertID string) *dynamicpb.Message {
	req := msg("EchoRequest")
	d := req.Descriptor()
	req.Set(d.Fields().ByName("device_id"), protoreflect.ValueOfString(deviceID))
	if alertID != "" {
		alert := msg("Alert")
		alert.Set(alert.Descriptor().Fields().ByName("alert_id"), protoreflect.ValueOfString(alertID))
		req.Set(d.Fields().ByName("alert"), protoreflect.ValueOfMessage(alert))
	}
	return req
}

// NewUpload returns an UploadRequest with payload; hold makes the call last until its
// caller leaves.
func NewUpload(payload []byte, hold bool) *dynamicpb.Message {
	req := msg("UploadRequest")
	d := req.Descriptor()
	req.Set(d.Fields().ByName("payload"), protoreflect.ValueOfBytes(payload))
	req.Set(d.Fields().ByName("hold"), protoreflect.ValueOfBool(hold))
	return req
}

// NewResponse returns an empty EchoResponse, for a client to receive into.
func NewResponse() *dynamicpb.Message { return msg("EchoResponse") }

// DeviceID returns the device_id field of an EchoRequest or EchoResponse.
func DeviceID(m protoreflect.ProtoMessage) string {
	r := m.ProtoReflect()
	return r.Get(r.Descriptor().Fields().ByName("device_id")).String()
}

func echo(req *dynamicpb.Message) *dynamicpb.Message {
	resp := NewResponse()
	resp.Set(resp.Descriptor().Fields().ByName("device_id"), protoreflect.ValueOfString(DeviceID(req)))
	return resp
}

// Register registers the test service on s.
func Register(s grpc.ServiceRegistrar) {
	File()
	unaryOf := func(name string, newReq func() *dynamicpb.Message, fn func(context.Context, *dynamicpb.Message) (any, error)) grpc.MethodDesc {
		return grpc.MethodDesc{
			MethodName: name,
			Handler: func(_ any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
				req := newReq()
				if err := dec(req); err != nil {
					return nil, err
				}
				h := func(ctx context.Context, r any) (any, error) { return fn(ctx, r.(*dynamicpb.Message)) }
				if in == nil {
					return h(ctx, req)
				}
				return in(ctx, req, &grpc.UnaryServerInfo{FullMethod: "/" + ServiceName + "/" + name}, h)
			},
		}
	}
	unary := func(name string, fn func(*dynamicpb.Message) (any, error)) grpc.MethodDesc {
		return unaryOf(name, func() *dynamicpb.Message { return NewRequest("", "") },
			func(_ context.Context, r *dynamicpb.Message) (any, error) { return fn(r) })
	}
	ok := func(req *dynamicpb.Message) (any, error) { return echo(req), nil }
	upload := func(ctx context.Context, req *dynamicpb.Message) (any, error) {
		if req.Get(req.Descriptor().Fields().ByName("hold")).Bool() {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return NewResponse(), nil
	}
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: ServiceName,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			unary("Echo", ok),
			unary("Admin", ok),
			unary("Internal", ok),
			unary("Panic", func(*dynamicpb.Message) (any, error) { panic("servertest: boom") }),
			unaryOf("Upload", func() *dynamicpb.Message { return NewUpload(nil, false) }, upload),
		},
		Streams: []grpc.StreamDesc{{
			StreamName:    "Stream",
			ServerStreams: true,
			ClientStreams: true,
			Handler: func(_ any, stream grpc.ServerStream) error {
				for {
					req := NewRequest("", "")
					if err := stream.RecvMsg(req); errors.Is(err, io.EOF) {
						return nil
					} else if err != nil {
						return err
					}
					if err := stream.SendMsg(echo(req)); err != nil {
						return err
					}
				}
			},
		}, {
			StreamName:    "Watch",
			ServerStreams: true,
			Handler: func(_ any, stream grpc.ServerStream) error {
				req := NewRequest("", "")
				if err := stream.RecvMsg(req); err != nil {
					return err
				}
				if err := stream.SendMsg(echo(req)); err != nil {
					return err
				}
				<-stream.Context().Done()
				return nil
			},
		}},
		Metadata: "condaccess/servertest/v1/servertest.proto",
	}, struct{}{})
}

// Call invokes a unary method of the test service and returns the response.
func Call(ctx context.Context, conn grpc.ClientConnInterface, method string, req protoreflect.ProtoMessage) (*dynamicpb.Message, error) {
	resp := NewResponse()
	if err := conn.Invoke(ctx, method, req, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// WatchDesc describes MethodWatch for conn.NewStream.
var WatchDesc = &grpc.StreamDesc{StreamName: "Watch", ServerStreams: true}

// StreamDesc describes MethodStream for conn.NewStream.
var StreamDesc = &grpc.StreamDesc{StreamName: "Stream", ServerStreams: true, ClientStreams: true}
