// A private endpoint for one sub-resource (group) of a service, registered in a private DNS zone.
param name string
param location string

@description('Subnet that receives the endpoint NIC.')
param subnetId string

@description('Resource the endpoint connects to.')
param targetResourceId string

@description('Sub-resource: vault, postgresqlServer, blob, ...')
param groupId string

@description('Private DNS zone the endpoint registers its A record in.')
param privateDnsZoneId string

param tags object = {}

resource endpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: name
        properties: {
          privateLinkServiceId: targetResourceId
          groupIds: [
            groupId
          ]
        }
      }
    ]
  }
}

resource dnsGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = {
  parent: endpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: replace(last(split(privateDnsZoneId, '/')), '.', '-')
        properties: {
          privateDnsZoneId: privateDnsZoneId
        }
      }
    ]
  }
}

output endpointId string = endpoint.id
