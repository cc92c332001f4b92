package local

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	v1reflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1"
	v1alphareflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	protov2 "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

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
