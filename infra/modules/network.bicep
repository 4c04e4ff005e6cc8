// One region's virtual network. The primary region holds the Function App's integration subnet, the
// private endpoints and the sandbox server's isolated delegated subnet; the secondary region holds the
// replica's private endpoint.
@description('Region of this network.')
param location string

@description('Name of the virtual network.')
param vnetName string

@description('Address space of the virtual network, e.g. 10.20.0.0/16.')
param addressPrefix string

@description('Private endpoints subnet prefix.')
param privateEndpointsPrefix string

@description('Function App VNet integration subnet prefix; empty = no such subnet in this region.')
param functionsPrefix string = ''

@description('Sandbox PostgreSQL subnet prefix (delegated, isolated); empty = no sandbox in this region.')
param sandboxPrefix string = ''

param tags object = {}

var hasFunctions = !empty(functionsPrefix)
var hasSandbox = !empty(sandboxPrefix)

// The sandbox restores untrusted backups: nothing reaches it but the Function App's subnet on 5432,
// and it reaches nothing outside its own subnet but Storage (its own WAL and backups) and Entra ID (logins).
resource sandboxNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = if (hasSandbox) {
  name: '${vnetName}-sandbox-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: [
      {
        name: 'allow-functions-postgres-in'
        properties: {
          priority: 100
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: hasFunctions ? functionsPrefix : addressPrefix
          sourcePortRange: '*'
          destinationAddressPrefix: sandboxPrefix
          destinationPortRange: '5432'
        }
      }
      {
        name: 'allow-subnet-internal-in'
        properties: {
          priority: 110
          direction: 'Inbound'
          access: 'Allow'
          protocol: '*'
          sourceAddressPrefix: sandboxPrefix
          sourcePortRange: '*'
          destinationAddressPrefix: sandboxPrefix
          destinationPortRange: '*'
        }
      }
      {
        name: 'deny-all-in'
        properties: {
          priority: 4000
          direction: 'Inbound'
          access: 'Deny'
          protocol: '*'
          sourceAddressPrefix: '*'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '*'
        }
      }
      {
        name: 'allow-subnet-internal-out'
        properties: {
          priority: 100
          direction: 'Outbound'
          access: 'Allow'
          protocol: '*'
          sourceAddressPrefix: sandboxPrefix
          sourcePortRange: '*'
          destinationAddressPrefix: sandboxPrefix
          destinationPortRange: '*'
        }
      }
      {
        name: 'allow-functions-out'
        properties: {
          priority: 110
          direction: 'Outbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: sandboxPrefix
          sourcePortRange: '*'
          destinationAddressPrefix: hasFunctions ? functionsPrefix : addressPrefix
          destinationPortRange: '*'
        }
      }
      {
        // Flexible Server archives WAL and its own backups to Azure Storage: the one way out.
        name: 'allow-storage-out'
        properties: {
          priority: 120
          direction: 'Outbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: sandboxPrefix
          sourcePortRange: '*'
          destinationAddressPrefix: 'Storage'
          destinationPortRange: '443'
        }
      }
      {
        // Microsoft Entra authentication on the server needs outbound HTTPS to Entra ID (Flexible Server
        // networking: the AzureActiveDirectory service tag); without it no Entra login works.
        name: 'allow-entra-id-out'
        properties: {
          priority: 130
          direction: 'Outbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: sandboxPrefix
          sourcePortRange: '*'
          destinationAddressPrefix: 'AzureActiveDirectory'
          destinationPortRange: '443'
        }
      }
      {
        name: 'deny-all-out'
        properties: {
          priority: 4000
          direction: 'Outbound'
          access: 'Deny'
          protocol: '*'
          sourceAddressPrefix: '*'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '*'
        }
      }
    ]
  }
}

var privateEndpointsSubnet = {
  name: 'private-endpoints'
  properties: {
    addressPrefix: privateEndpointsPrefix
    privateEndpointNetworkPolicies: 'Enabled'
  }
}

var functionsSubnet = {
  name: 'functions'
  properties: {
    addressPrefix: functionsPrefix
    serviceEndpoints: [
      {
        service: 'Microsoft.Storage'
      }
    ]
    delegations: [
      {
        name: 'web-serverfarms'
        properties: {
          serviceName: 'Microsoft.Web/serverFarms'
        }
      }
    ]
  }
}

var sandboxSubnet = {
  name: 'sandbox'
  properties: {
    addressPrefix: sandboxPrefix
    networkSecurityGroup: {
      // By name, not sandboxNsg.id: the NSG exists only where a sandbox does.
      id: resourceId('Microsoft.Network/networkSecurityGroups', '${vnetName}-sandbox-nsg')
    }
    delegations: [
      {
        name: 'postgres-flexible'
        properties: {
          serviceName: 'Microsoft.DBforPostgreSQL/flexibleServers'
        }
      }
    ]
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: vnetName
  location: location
  tags: tags
  dependsOn: [
    sandboxNsg
  ]
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: concat([privateEndpointsSubnet], hasFunctions ? [functionsSubnet] : [], hasSandbox ? [sandboxSubnet] : [])
  }
}

output vnetId string = vnet.id
output vnetName string = vnet.name
output privateEndpointsSubnetId string = '${vnet.id}/subnets/private-endpoints'
output functionsSubnetId string = hasFunctions ? '${vnet.id}/subnets/functions' : ''
output sandboxSubnetId string = hasSandbox ? '${vnet.id}/subnets/sandbox' : ''
