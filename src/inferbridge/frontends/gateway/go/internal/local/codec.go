package local

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/reflection"
	v1reflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1"
	v1alphareflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	protov2 "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// rawMsg is a message kept as the bytes on the wire.
type rawMsg struct{ data mem.BufferSlice }

// codec passes rawMsg through untouched and delegates every other message (those of
// health and reflection) to grpc-go's proto codec.
type codec struct{ proto encoding.CodecV2 }

func newCodec() codec { return codec{proto: encoding.GetCodecV2(proto.Name)} }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(*rawMsg); ok {
		data := m.data // grpc-go frees what Marshal returns once it is sent
		m.data = nil
		return data, nil
	}
	return c.proto.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*rawMsg); ok {
		data.Ref() // grpc-go frees data after Unmarshal; keep it until it is written
		m.data = data
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

func (codec) Name() string { return proto.Name }

// registerReflection serves reflection v1 and v1alpha for the forwarded services
// described by set (a serialized FileDescriptorSet) and for the services registered
// on srv (health and reflection), whose files are in protoregistry.GlobalFiles. It
// returns the full method names ("/pkg.Service/Method") of the forwarded services.
func registerReflection(srv *grpc.Server, set []byte) ([]string, error) {
	var fds descriptorpb.FileDescriptorSet
	if err := protov2.Unmarshal(set, &fds); err != nil {
		return nil, fmt.Errorf("backend: DESCRIPTORS: %w", err)
	}
	files, err := protodesc.NewFiles(&fds)
	if err != nil {
		return nil, fmt.Errorf("backend: DESCRIPTORS: %w", err)
	}
	var forwarded, methods []string
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			forwarded = append(forwarded, string(sd.FullName()))
			for j := 0; j < sd.Methods().Len(); j++ {
				methods = append(methods, "/"+string(sd.FullName())+"/"+string(sd.Methods().Get(j).Name()))
			}
		}
		return true
	})
	opts := reflection.ServerOptions{
		Services:           services{srv: srv, forwarded: forwarded},
		DescriptorResolver: resolver{files},
		ExtensionResolver:  protoregistry.GlobalTypes,
	}
	v1reflectiongrpc.RegisterServerReflectionServer(srv, reflection.NewServerV1(opts))
	v1alphareflectiongrpc.RegisterServerReflectionServer(srv, reflection.NewServer(opts))
	return methods, nil
}

// services lists the registered services plus the forwarded ones.
type services struct {
	srv       *grpc.Server
	forwarded []string
}

func (s services) GetServiceInfo() map[string]grpc.ServiceInfo {
	m := s.srv.GetServiceInfo()
	for _, name := range s.forwarded {
		m[name] = grpc.ServiceInfo{}
	}
	return m
}

// resolver looks in the forwarded files first, then in the linked-in ones.
type resolver struct{ files *protoregistry.Files }

func (r resolver) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	if fd, err := r.files.FindFileByPath(path); err == nil {
		return fd, nil
	}
	return protoregistry.GlobalFiles.FindFileByPath(path)
}

func (r resolver) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	if d, err := r.files.FindDescriptorByName(name); err == nil {
		return d, nil
	}
	return protoregistry.GlobalFiles.FindDescriptorByName(name)
}
