# Regenerates cluster.yaml and flows.jsonl of this case (python3 with PyYAML): python3 generate.py
import json, yaml, sys
docs = []
def ns(name):
    docs.append({"apiVersion":"v1","kind":"Namespace","metadata":{"name":name,"labels":{"kubernetes.io/metadata.name":name}}})
for n in ["default","kube-system","shop","data","logging","batch"]: ns(n)
def node(name, ip, cidr):
    docs.append({"apiVersion":"v1","kind":"Node","metadata":{"name":name,"labels":{"kubernetes.io/hostname":name}},
      "spec":{"podCIDR":cidr,"podCIDRs":[cidr]},
      "status":{"addresses":[{"type":"InternalIP","address":ip},{"type":"Hostname","address":name}]}})
node("node-a","172.18.0.2","10.244.0.0/24"); node("node-b","172.18.0.3","10.244.1.0/24")
uidn=[0]
def uid(tag):
    uidn[0]+=1
    return "00000000-0000-4000-8000-%012d" % uidn[0]
def container(name, ports):
    c={"name":name,"image":"registry.example.test/%s:1.0" % name}
    if ports: c["ports"]=[dict(p) for p in ports]
    return c
def template(labels, cname, ports):
    return {"metadata":{"labels":labels},"spec":{"containers":[container(cname, ports)]}}
pods_out=[]
def pod(nsn, name, labels, owner_kind, owner_name, owner_uid, ip, nodename, cname, ports, host=False):
    u=uid("pod")
    p={"apiVersion":"v1","kind":"Pod","metadata":{"name":name,"namespace":nsn,"uid":u,"labels":labels,
        "ownerReferences":[{"apiVersion":"apps/v1" if owner_kind!="Job" else "batch/v1","kind":owner_kind,"name":owner_name,"uid":owner_uid,"controller":True}]},
       "spec":{"nodeName":nodename,"containers":[container(cname, ports)]},
       "status":{"phase":"Running","podIP":ip,"podIPs":[{"ip":ip}],"hostIP":"172.18.0.2" if nodename=="node-a" else "172.18.0.3"}}
    if host: p["spec"]["hostNetwork"]=True
    docs.append(p); pods_out.append(p)
    return p
def deployment(nsn, name, sel, replicas, hashv, cname, ports, ips):
    du=uid("d"); ru=uid("rs")
    docs.append({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":name,"namespace":nsn,"uid":du,"labels":sel},
      "spec":{"replicas":replicas,"selector":{"matchLabels":sel},"template":template(sel,cname,ports)}})
    rsl=dict(sel); rsl["pod-template-hash"]=hashv
    docs.append({"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{"name":f"{name}-{hashv}","namespace":nsn,"uid":ru,"labels":rsl,
      "ownerReferences":[{"apiVersion":"apps/v1","kind":"Deployment","name":name,"uid":du,"controller":True}]},
      "spec":{"replicas":replicas,"selector":{"matchLabels":rsl},"template":template(rsl,cname,ports)}})
    out=[]
    for i,(ip,nodename) in enumerate(ips):
        suffix=["x2k4q","b7vtm","q9zcd"][i]
        out.append(pod(nsn,f"{name}-{hashv}-{suffix}",rsl,"ReplicaSet",f"{name}-{hashv}",ru,ip,nodename,cname,ports))
    return out
def service(nsn, name, ip, sel, ports, extra_labels=None):
    s={"apiVersion":"v1","kind":"Service","metadata":{"name":name,"namespace":nsn,"uid":uid("svc")},
       "spec":{"type":"ClusterIP","clusterIP":ip,"clusterIPs":[ip],"ports":ports}}
    if sel: s["spec"]["selector"]=sel
    if extra_labels: s["metadata"]["labels"]=extra_labels
    docs.append(s)
def slice_(nsn, svc, ports, eps):
    docs.append({"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","addressType":"IPv4",
      "metadata":{"name":f"{svc}-abc12","namespace":nsn,"labels":{"kubernetes.io/service-name":svc}},
      "ports":ports,
      "endpoints":[{"addresses":[ip],"conditions":{"ready":True},**({"targetRef":{"kind":"Pod","namespace":nsn,"name":pn}} if pn else {}),**({"nodeName":nd} if nd else {})} for ip,pn,nd in eps]})

# kube-system: CoreDNS behind kube-dns
dnsports=[{"name":"dns","containerPort":53,"protocol":"UDP"},{"name":"dns-tcp","containerPort":53,"protocol":"TCP"},{"name":"metrics","containerPort":9153,"protocol":"TCP"}]
dnspods=deployment("kube-system","coredns",{"k8s-app":"kube-dns"},2,"5d78c9869d","coredns",dnsports,[("10.244.0.2","node-a"),("10.244.1.2","node-b")])
service("kube-system","kube-dns","10.96.0.10",{"k8s-app":"kube-dns"},[{"name":"dns","port":53,"protocol":"UDP","targetPort":53},{"name":"dns-tcp","port":53,"protocol":"TCP","targetPort":53},{"name":"metrics","port":9153,"protocol":"TCP","targetPort":9153}],{"k8s-app":"kube-dns","kubernetes.io/name":"CoreDNS"})
slice_("kube-system","kube-dns",[{"name":"dns","port":53,"protocol":"UDP"},{"name":"dns-tcp","port":53,"protocol":"TCP"},{"name":"metrics","port":9153,"protocol":"TCP"}],[(p["status"]["podIP"],p["metadata"]["name"],p["spec"]["nodeName"]) for p in dnspods])
# default: the apiserver
service("default","kubernetes","10.96.0.1",None,[{"name":"https","port":443,"protocol":"TCP","targetPort":6443}],{"component":"apiserver","provider":"kubernetes"})
slice_("default","kubernetes",[{"name":"https","port":6443,"protocol":"TCP"}],[("172.18.0.2",None,None)])
# shop: web (2 replicas) and cart (named targetPort http -> 8080)
web=deployment("shop","web",{"app":"web"},2,"7c5d8f9b4","web",[{"name":"http","containerPort":8080,"protocol":"TCP"}],[("10.244.0.11","node-a"),("10.244.1.11","node-b")])
cart=deployment("shop","cart",{"app":"cart","tier":"backend"},1,"6f7b8c9d5","cart",[{"name":"http","containerPort":8080,"protocol":"TCP"}],[("10.244.1.12","node-b")])
service("shop","cart","10.96.50.5",{"app":"cart","tier":"backend"},[{"name":"http","port":80,"protocol":"TCP","targetPort":"http"}])
slice_("shop","cart",[{"name":"http","port":8080,"protocol":"TCP"}],[("10.244.1.12",cart[0]["metadata"]["name"],"node-b")])
service("shop","web","10.96.50.4",{"app":"web"},[{"name":"http","port":80,"protocol":"TCP","targetPort":"http"}])
slice_("shop","web",[{"name":"http","port":8080,"protocol":"TCP"}],[(p["status"]["podIP"],p["metadata"]["name"],p["spec"]["nodeName"]) for p in web])
# data: postgres StatefulSet
su=uid("sts")
docs.append({"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"postgres","namespace":"data","uid":su},
  "spec":{"replicas":1,"serviceName":"postgres","selector":{"matchLabels":{"app":"postgres"}},"template":template({"app":"postgres"},"postgres",[{"name":"pg","containerPort":5432,"protocol":"TCP"}])}})
pg=pod("data","postgres-0",{"app":"postgres","controller-revision-hash":"postgres-6c8f7d9b5c","statefulset.kubernetes.io/pod-name":"postgres-0","apps.kubernetes.io/pod-index":"0"},"StatefulSet","postgres",su,"10.244.1.20","node-b","postgres",[{"name":"pg","containerPort":5432,"protocol":"TCP"}])
service("data","postgres","10.96.100.20",{"app":"postgres"},[{"name":"pg","port":5432,"protocol":"TCP","targetPort":"pg"}])
slice_("data","postgres",[{"name":"pg","port":5432,"protocol":"TCP"}],[("10.244.1.20","postgres-0","node-b")])
# logging: DaemonSet log-shipper on both nodes
dsu=uid("ds")
docs.append({"apiVersion":"apps/v1","kind":"DaemonSet","metadata":{"name":"log-shipper","namespace":"logging","uid":dsu},
  "spec":{"selector":{"matchLabels":{"app.kubernetes.io/name":"log-shipper"}},"template":template({"app.kubernetes.io/name":"log-shipper"},"shipper",[])}})
ls=[pod("logging",f"log-shipper-{s}",{"app.kubernetes.io/name":"log-shipper","controller-revision-hash":"7b9c6d5f48","pod-template-generation":"1"},"DaemonSet","log-shipper",dsu,ip,nd,"shipper",[]) for s,ip,nd in [("8kx2p","10.244.0.30","node-a"),("tq7wz","10.244.1.30","node-b")]]
# batch: a Job
ju=uid("job")
jl={"app":"nightly-report","batch.kubernetes.io/controller-uid":ju,"batch.kubernetes.io/job-name":"nightly-report","controller-uid":ju,"job-name":"nightly-report"}
docs.append({"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"nightly-report","namespace":"batch","uid":ju,"labels":jl},
  "spec":{"selector":{"matchLabels":{"batch.kubernetes.io/controller-uid":ju}},"template":{"metadata":{"labels":jl},"spec":{"restartPolicy":"Never","containers":[container("report",[])]}}}})
job=pod("batch","nightly-report-5x7kq",jl,"Job","nightly-report",ju,"10.244.0.40","node-a","report",[])

with open("cluster.yaml","w") as f:
    f.write("# A two-node cluster: CoreDNS behind kube-dns, the apiserver Service, a Deployment with two\n# replicas, a Service with a named targetPort (80 -> http -> 8080), a StatefulSet, a DaemonSet, a Job.\n")
    yaml.safe_dump_all(docs, f, sort_keys=False)

flows=[]
def rec(p, ip, port, proto, outcome, first, last, count, names=None):
    src={"kind":"pod","namespace":p["metadata"]["namespace"],"pod":p["metadata"]["name"],"uid":p["metadata"]["uid"],
         "labels":p["metadata"]["labels"]}
    src["container_id"]="containerd://"+p["metadata"]["uid"].replace("-","")[:32]
    o=p["metadata"]["ownerReferences"][0]
    src["workload"]={"kind":"Deployment","name":o["name"].rsplit("-",1)[0]} if o["kind"]=="ReplicaSet" else {"kind":o["kind"],"name":o["name"]}
    src={k:src[k] for k in ["kind","namespace","pod","uid","container_id","workload","labels"]}
    d={"ip":ip,"port":port,"protocol":proto}
    if names: d["dns_names"]=names
    flows.append({"node":p["spec"]["nodeName"],"source":src,"destination":d,
      "first_seen":f"2026-11-26T{first}:00Z","last_seen":f"2026-11-26T{last}:00Z","count":count,"outcome":outcome})
for w in web:
    rec(w,"10.96.0.10",53,"UDP","sent","16:00","16:55",120)
    rec(w,"10.96.50.5",80,"TCP","established","16:00","16:55",300)          # cart via Service, targetPort http=8080
    rec(w,"10.96.100.20",5432,"TCP","established","16:01","16:50",40)      # postgres, other namespace
for i,ip in enumerate(["198.18.0.10","198.18.0.11","198.18.0.12","198.18.0.13"]):
    rec(web[i%2],ip,443,"TCP","established","16:02","16:40",10+i,["api.example.test"])
rec(web[0],"10.96.0.10",53,"TCP","established","16:10","16:10",1)
rec(cart[0],"10.96.0.10",53,"UDP","sent","16:00","16:55",80)
rec(cart[0],"198.18.5.1",443,"TCP","timeout","16:05","16:45",6,["payments.example.test"])
rec(cart[0],"10.244.1.20",5432,"TCP","established","16:03","16:53",12)    # postgres by pod IP
for p in ls:
    rec(p,"10.96.0.1",443,"TCP","established","16:00","16:59",60)          # apiserver via the kubernetes Service
    rec(p,"198.18.0.30",443,"TCP","established","16:00","16:59",500,["logs.example.test"])
    rec(p,"2001:db8:100::5",443,"TCP","established","16:00","16:59",20,["logs.example.test"])
    rec(p,p["status"]["hostIP"],10250,"TCP","established","16:00","16:59",30)  # kubelet on its node
rec(job,"10.96.0.10",53,"UDP","sent","16:20","16:21",4)
rec(job,"10.96.100.20",5432,"TCP","established","16:20","16:21",2)
rec(job,"198.18.9.9",443,"TCP","refused","16:21","16:21",1,["reports.example.test"])
with open("flows.jsonl","w") as f:
    for r in flows: f.write(json.dumps(r, separators=(",",":"))+"\n")
